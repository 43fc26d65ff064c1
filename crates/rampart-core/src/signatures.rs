//! The model-signature policy (`--model-signature-policy`, `--model-signature-key`, `--model-signature-root`):
//! before anything reads a model directory, it is verified against its `model.sig` (OpenSSF model signing,
//! `rampart-signing`) while each file is copied into a private snapshot, and the model loads from the
//! snapshot: the bytes loaded are the bytes verified. Every load path comes through here (startup, poll, explicit load, overrides, cloud
//! repositories after mirroring).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::options::SignatureMode;
use crate::server::Server;

/// The outcome for one model directory.
pub(crate) enum Checked {
    /// The policy is off: load from the directory itself.
    Unchecked,
    /// It did not verify and the policy is `warn`: load from the directory itself.
    Unverified,
    /// Verified: load from this snapshot of the verified bytes.
    Snapshot(Arc<tempfile::TempDir>),
    /// Refused, with the reason the repository index shows.
    Refused(String),
}

impl Server {
    /// Verifies model `name` in `dir` under the server's policy. A config override must be the signed
    /// `config.pbtxt` (the same ModelConfig once parsed), so that a signed `file:` upload, which Triton's API
    /// always sends with a `config`, loads; any other override fails the check.
    pub(crate) fn check_signature(
        &self,
        name: &str,
        dir: &Path,
        config_override: Option<&str>,
    ) -> Checked {
        let policy = &self.inner.options.signatures;
        if policy.mode == SignatureMode::Off {
            return Checked::Unchecked;
        }
        let autocomplete = self.inner.options.autocomplete;
        let result = snapshot_dir().and_then(|snapshot| {
            let verified = rampart_signing::verify_dir(dir, &policy.trust, Some(snapshot.path()))
                .map_err(|e| e.to_string())?;
            if let Some(json) = config_override {
                same_config(name, snapshot.path(), json, autocomplete)?;
            }
            Ok((verified, snapshot))
        });
        match result {
            Ok((verified, snapshot)) => {
                tracing::info!(
                    "model '{name}': signature verified ({} files, signed by {})",
                    verified.files.len(),
                    verified.signer
                );
                self.audit_signature(name, "verified", &verified.signer);
                Checked::Snapshot(Arc::new(snapshot))
            }
            Err(why) => {
                let reason = format!("model '{name}': signature check failed: {why}");
                self.audit_signature(name, "refused", &why);
                if policy.mode == SignatureMode::Enforce {
                    Checked::Refused(reason)
                } else {
                    tracing::warn!("{reason}; loading it anyway (--model-signature-policy=warn)");
                    Checked::Unverified
                }
            }
        }
    }

    fn audit_signature(&self, model: &str, outcome: &str, detail: &str) {
        if let Some(audit) = &self.inner.options.audit {
            audit.record(&crate::audit::AuditEvent {
                event: "model_signature",
                model: Some(model.to_string()),
                target: Some(detail.to_string()),
                outcome: Some(outcome.to_string()),
                ..Default::default()
            });
        }
    }
}

/// Whether the `config` override `json` is the signed `config.pbtxt` in `signed`.
fn same_config(name: &str, signed: &Path, json: &str, autocomplete: bool) -> Result<(), String> {
    let differs = |why: String| {
        format!(
            "the config override is not the signed config.pbtxt ({why}); send the signed config or none"
        )
    };
    let from_override =
        crate::config::from_json(json, signed, name).map_err(|e| differs(e.to_string()))?;
    let from_file =
        crate::config::read(signed, name, autocomplete).map_err(|e| differs(e.to_string()))?;
    if from_override.config != from_file.config {
        return Err(differs("they differ".into()));
    }
    Ok(())
}

/// A fresh snapshot directory. Readable like a model repository (0755): a Python model's worker may run as
/// another user; nobody but the server can write it.
fn snapshot_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("rampart-verified-")
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir()
        .map_err(|e| format!("cannot create a snapshot directory: {e}"))
}
