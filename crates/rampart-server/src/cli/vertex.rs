//! The Vertex AI front end's flags (heading "Vertex") and the `AIP_*` environment it reads
//! (docs/protocol.md, "Vertex AI").

use clap::{ArgAction, Args};

use super::{CliError, aip_prediction_mode, parse_bool};

#[cfg(feature = "vertex")]
pub use rampart_http::VertexOptions;
/// A build without the Vertex AI front end never has its options.
#[cfg(not(feature = "vertex"))]
#[derive(Debug, Clone)]
pub enum VertexOptions {}

#[derive(Args, Debug)]
pub struct VertexFlags {
    /// Default: true when AIP_MODE=PREDICTION.
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, help_heading = "Vertex")]
    pub allow_vertex_ai: Option<bool>,
    /// Port of the Vertex AI front end (on --http-address). Default: $AIP_HTTP_PORT, else 8080.
    #[arg(long, help_heading = "Vertex")]
    pub vertex_ai_port: Option<u16>,
    #[arg(long, help_heading = "Vertex")]
    pub vertex_ai_thread_count: Option<String>,
    #[arg(long, help_heading = "Vertex")]
    pub vertex_ai_default_model: Option<String>,
}

impl VertexFlags {
    /// `--allow-vertex-ai`, default on when `AIP_MODE=PREDICTION`.
    pub(super) fn enabled(&self) -> bool {
        self.allow_vertex_ai.unwrap_or(aip_prediction_mode())
    }

    /// Settings given beyond the defaults (reported when the front end is off).
    pub(super) fn settings_given(&self) -> bool {
        self.vertex_ai_port.is_some()
            || self.vertex_ai_thread_count.is_some()
            || self.vertex_ai_default_model.is_some()
    }

    /// The Vertex AI front end in a build without it is refused.
    #[cfg(not(feature = "vertex"))]
    pub(super) fn options(&self) -> Result<Option<(VertexOptions, u16)>, CliError> {
        if self.enabled() {
            return Err(CliError::NotBuilt {
                what: "--allow-vertex-ai (or AIP_MODE=PREDICTION)",
                feature: "vertex",
            });
        }
        Ok(None)
    }

    /// `--allow-vertex-ai` (default on when `AIP_MODE=PREDICTION`) and the `AIP_*` environment
    /// (docs/protocol.md, "Vertex AI"): the options and the port.
    #[cfg(feature = "vertex")]
    pub(super) fn options(&self) -> Result<Option<(VertexOptions, u16)>, CliError> {
        if !self.enabled() {
            return Ok(None);
        }
        let route = |var: &str| {
            let r = std::env::var(var).map_err(|_| {
                CliError::Vertex(format!("the Vertex AI front end needs {var} (both AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE must be set)"))
            })?;
            if rampart_http::valid_vertex_route(&r) {
                Ok(r)
            } else {
                Err(CliError::Vertex(format!(
                    "{var} '{}' is not a plain absolute URL path",
                    r.escape_debug()
                )))
            }
        };
        let (predict_route, health_route) =
            (route("AIP_PREDICT_ROUTE")?, route("AIP_HEALTH_ROUTE")?);
        if predict_route == health_route {
            return Err(CliError::Vertex(
                "AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE must differ".into(),
            ));
        }
        let port = match self.vertex_ai_port {
            Some(p) => p,
            None => match std::env::var("AIP_HTTP_PORT") {
                Ok(p) => p.parse().map_err(|_| {
                    CliError::Vertex(format!(
                        "AIP_HTTP_PORT '{}' is not a port number",
                        p.escape_debug()
                    ))
                })?,
                Err(_) => 8080,
            },
        };
        let default_model = self.vertex_ai_default_model.clone().filter(|m| !m.is_empty());
        Ok(Some((VertexOptions { predict_route, health_route, default_model }, port)))
    }
}
