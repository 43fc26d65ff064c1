//! OpenSSF model signing for Rampart: checks that a model directory holds exactly the bytes a trusted key
//! signed, in the format of the reference tool (`model-signing` on PyPI, `model_signing sign key …`): a
//! `model.sig` Sigstore bundle whose DSSE envelope carries an in-toto statement listing every file with its
//! digest.
//!
//! - [`TrustedKey`]: an ECDSA P-256 or P-384 public key (PEM `PUBLIC KEY`), or the key of a PEM certificate.
//! - [`TrustedRoot`]: a root certificate that a signature's certificate chain must lead to
//!   (`model_signing sign certificate`).
//! - [`verify_dir`]: verifies the signature, then hashes every file of the directory (the `files` method,
//!   sha256 or blake3, as the signer chose) and requires an exact match: an extra, missing or changed file
//!   fails, naming the first one.
//!   With a snapshot directory, each file is copied there while it is hashed, so what a loader then reads is
//!   what was verified (no check-then-use gap).
//!
//! Ignored, as by the reference tool: `model.sig` and the top-level `.git`, `.gitignore`, `.gitattributes`
//! and `.github`. Stricter than the reference tool: other ignore paths a signer recorded are not honoured
//! (a file under them is an extra file), and symbolic links always fail.

mod bundle;
mod chain;
mod key;
mod tree;

pub use chain::TrustedRoot;
pub use key::TrustedKey;

/// Who may sign: keys trusted as they are, and roots that signing certificates must chain to.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub keys: Vec<TrustedKey>,
    pub roots: Vec<TrustedRoot>,
}

impl Trust {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.roots.is_empty()
    }
}

/// The signature file in a model directory.
pub const SIGNATURE_FILE: &str = "model.sig";

/// A directory that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Who signed it: `key <fingerprint>` ([`TrustedKey::fingerprint`]), or `certificate '<subject>' (root
    /// '<subject>')`.
    pub signer: String,
    /// Every file covered, as a path relative to the directory, with its digest (hex; sha256 or blake3, as
    /// signed), in name order.
    pub files: Vec<(String, String)>,
}

/// Why a directory did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SigningError {
    pub message: String,
    /// The first file that failed, relative to the directory, when one file is the reason.
    pub file: Option<String>,
}

impl SigningError {
    fn new(message: impl Into<String>) -> Self {
        SigningError { message: message.into(), file: None }
    }

    fn at(file: &str, message: impl Into<String>) -> Self {
        SigningError { message: message.into(), file: Some(file.to_string()) }
    }
}

/// Verifies `dir` against its `model.sig` and `trust`. With `snapshot`, every covered file is also copied under
/// it (same relative paths) while it is hashed; on failure the snapshot is incomplete and must be discarded.
pub fn verify_dir(
    dir: &std::path::Path,
    trust: &Trust,
    snapshot: Option<&std::path::Path>,
) -> Result<Verified, SigningError> {
    if trust.is_empty() {
        return Err(SigningError::new(
            "no trusted key or root is configured (--model-signature-key, --model-signature-root)",
        ));
    }
    let manifest = bundle::read(&dir.join(SIGNATURE_FILE), trust)?;
    let found = tree::hash(dir, manifest.hash, snapshot)?;
    tree::compare(&manifest.files, &found)?;
    Ok(Verified { signer: manifest.signer, files: found })
}

#[cfg(test)]
mod tests;
