//! Trusted public keys: PEM parsing, the reference tool's key fingerprint, signature checks.

use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::prelude::FromDer;

use crate::SigningError;

const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

/// An ECDSA public key that may sign models.
#[derive(Clone)]
pub struct TrustedKey {
    /// The uncompressed curve point.
    point: Vec<u8>,
    algorithm: &'static dyn VerificationAlgorithm,
    fingerprint: String,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey").field("fingerprint", &self.fingerprint).finish()
    }
}

impl TrustedKey {
    /// A key from PEM text: a `PUBLIC KEY` (SubjectPublicKeyInfo) or a `CERTIFICATE` (its public key; the
    /// certificate itself is not checked).
    pub fn from_pem(text: &str) -> Result<TrustedKey, SigningError> {
        let (label, der) = pem_blocks(text)?.swap_remove(0);
        let spki_der = match label.as_str() {
            "PUBLIC KEY" => der,
            "CERTIFICATE" => {
                let (_, cert) =
                    x509_parser::certificate::X509Certificate::from_der(&der).map_err(|e| {
                        SigningError::new(format!("the certificate does not parse: {e}"))
                    })?;
                cert.tbs_certificate.subject_pki.raw.to_vec()
            }
            other => {
                return Err(SigningError::new(format!(
                    "a trusted key is a PEM 'PUBLIC KEY' or 'CERTIFICATE', not '{other}'"
                )));
            }
        };
        TrustedKey::from_spki(&spki_der)
    }

    /// A key from its DER SubjectPublicKeyInfo.
    pub(crate) fn from_spki(spki_der: &[u8]) -> Result<TrustedKey, SigningError> {
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| SigningError::new(format!("the public key does not parse: {e}")))?;
        if spki.algorithm.algorithm.to_id_string() != EC_PUBLIC_KEY {
            return Err(SigningError::new("only ECDSA keys (P-256, P-384) can be trusted"));
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string())
            .unwrap_or_default();
        // The reference tool hashes with SHA-256 for P-256 and SHA-384 for P-384.
        let algorithm: &'static dyn VerificationAlgorithm = match curve.as_str() {
            P256 => &signature::ECDSA_P256_SHA256_ASN1,
            P384 => &signature::ECDSA_P384_SHA384_ASN1,
            _ => {
                return Err(SigningError::new(format!(
                    "ECDSA curve {curve} is not supported (P-256 and P-384 are)"
                )));
            }
        };
        Ok(TrustedKey {
            point: spki.subject_public_key.data.to_vec(),
            algorithm,
            fingerprint: fingerprint(spki_der),
        })
    }

    /// The reference tool's key hint: the hex SHA-256 of the key's SubjectPublicKeyInfo in PEM form.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub(crate) fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(self.algorithm, &self.point).verify(message, sig).is_ok()
    }
}

/// Every PEM block of `text`, in order: (label, DER); at least one.
pub(crate) fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, SigningError> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(begin) = rest.find("-----BEGIN ") {
        let after = &rest[begin + "-----BEGIN ".len()..];
        let label_end =
            after.find("-----").ok_or_else(|| SigningError::new("malformed PEM header"))?;
        let label = after[..label_end].to_string();
        let body_start = label_end + "-----".len();
        let end_marker = format!("-----END {label}-----");
        let body_end = after
            .find(&end_marker)
            .ok_or_else(|| SigningError::new("malformed PEM: no END line"))?;
        let body: String =
            after[body_start..body_end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| SigningError::new(format!("malformed PEM base64: {e}")))?;
        blocks.push((label, der));
        rest = &after[body_end + end_marker.len()..];
    }
    if blocks.is_empty() {
        return Err(SigningError::new("the file holds no PEM block"));
    }
    Ok(blocks)
}

/// SHA-256 (hex) of `spki_der` written as PEM with 64-character lines, as Python's `cryptography` writes it.
fn fingerprint(spki_der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    hex(ring::digest::digest(&ring::digest::SHA256, pem.as_bytes()).as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
