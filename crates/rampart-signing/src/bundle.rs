//! `model.sig`: the Sigstore bundle, its DSSE envelope and the in-toto statement that lists the files.

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine as _;
use serde_json::Value;

use crate::key::{TrustedKey, hex};
use crate::{SIGNATURE_FILE, SigningError, Trust};

/// Largest `model.sig` read.
const MAX_SIGNATURE_BYTES: u64 = 16 << 20;
const IN_TOTO: &str = "application/vnd.in-toto+json";
const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
const PREDICATE_V1: &str = "https://model_signing/signature/v1.0";
const PREDICATE_V01: &str = "https://model_signing/Digests/v0.1";

/// What a verified signature says.
pub(crate) struct Manifest {
    pub signer: String,
    /// How each file was hashed.
    pub hash: Hash,
    /// Relative path → digest (hex).
    pub files: BTreeMap<String, String>,
}

/// The file digests a signature may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Blake3,
}

/// Reads and verifies `path`: a signature by one of `keys`, over a statement this verifier understands.
pub(crate) fn read(path: &std::path::Path, trust: &Trust) -> Result<Manifest, SigningError> {
    let file = std::fs::File::open(path).map_err(|e| {
        SigningError::at(
            SIGNATURE_FILE,
            format!("the model is not signed: cannot read {SIGNATURE_FILE}: {e}"),
        )
    })?;
    let mut text = Vec::new();
    file.take(MAX_SIGNATURE_BYTES + 1).read_to_end(&mut text).map_err(|e| {
        SigningError::at(SIGNATURE_FILE, format!("cannot read {SIGNATURE_FILE}: {e}"))
    })?;
    if text.len() as u64 > MAX_SIGNATURE_BYTES {
        return Err(bad(format!("{SIGNATURE_FILE} is larger than {MAX_SIGNATURE_BYTES} bytes")));
    }
    let bundle: Value = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("{SIGNATURE_FILE} is not a Sigstore bundle (JSON): {e}")))?;
    let material = &bundle["verificationMaterial"];
    if !material["certificate"].is_null()
        || !material["tlogEntries"].as_array().is_none_or(Vec::is_empty)
    {
        return Err(bad(
            "keyless (Sigstore) signatures are not supported; sign with a key (model_signing sign key) \
             or a certificate (model_signing sign certificate)",
        ));
    }
    let envelope = &bundle["dsseEnvelope"];
    if envelope.is_null() {
        return Err(bad(format!("{SIGNATURE_FILE} holds no DSSE envelope")));
    }
    if envelope["payloadType"] != IN_TOTO {
        return Err(bad(format!("the envelope's payload type is not {IN_TOTO}")));
    }
    let payload = b64(&envelope["payload"], "payload")?;
    let chain = &material["x509CertificateChain"];
    let (candidates, hint, certificate) = if chain.is_null() {
        // A hint names the key; without one (older signatures) every trusted key is tried.
        let hint = material["publicKey"]["hint"].as_str().unwrap_or_default();
        let keys = trust.keys.iter().filter(|k| hint.is_empty() || k.fingerprint() == hint);
        (keys.cloned().collect::<Vec<TrustedKey>>(), hint, None)
    } else {
        let mut ders = Vec::new();
        for c in chain["certificates"].as_array().map(Vec::as_slice).unwrap_or_default() {
            ders.push(b64(&c["rawBytes"], "certificate")?);
        }
        let (key, identity) = crate::chain::leaf_key(&ders, &trust.roots)?;
        (vec![key], "", Some(identity))
    };
    let messages = [pae(&payload), pae_compat(&payload)];
    let mut signer = None;
    for sig in envelope["signatures"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let sig = b64(&sig["sig"], "signature")?;
        if let Some(k) = candidates.iter().find(|k| messages.iter().any(|m| k.verifies(m, &sig))) {
            signer =
                Some(certificate.clone().unwrap_or_else(|| format!("key {}", k.fingerprint())));
            break;
        }
    }
    let Some(signer) = signer else {
        let which = match (&certificate, hint) {
            (Some(identity), _) => format!(" (the envelope is not signed by {identity})"),
            (None, "") => String::new(),
            (None, hint) => format!(" (it names key {hint})"),
        };
        return Err(bad(format!("{SIGNATURE_FILE} is not signed by a trusted key{which}")));
    };
    let statement: Value = serde_json::from_slice(&payload)
        .map_err(|e| bad(format!("the signed statement is not JSON: {e}")))?;
    if statement["_type"] != STATEMENT_V1 {
        return Err(bad(format!("the signed statement is not an in-toto {STATEMENT_V1}")));
    }
    let (hash, files) = match statement["predicateType"].as_str() {
        Some(PREDICATE_V1) => files_v1(&statement)?,
        Some(PREDICATE_V01) => (Hash::Sha256, files_v01(&statement)?),
        other => {
            return Err(bad(format!("unknown predicate type {}", other.unwrap_or("(none)"))));
        }
    };
    Ok(Manifest { signer, hash, files })
}

fn bad(message: impl Into<String>) -> SigningError {
    SigningError::at(SIGNATURE_FILE, message)
}

fn b64(v: &Value, what: &str) -> Result<Vec<u8>, SigningError> {
    let s = v.as_str().ok_or_else(|| bad(format!("the envelope has no {what}")))?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| bad(format!("the envelope's {what} is not base64: {e}")))
}

/// The v1.0 predicate: `resources` list every file, the subject digest covers them in order.
fn files_v1(statement: &Value) -> Result<(Hash, BTreeMap<String, String>), SigningError> {
    let predicate = &statement["predicate"];
    let serialization = &predicate["serialization"];
    match serialization["method"].as_str() {
        Some("files") => {}
        other => {
            return Err(bad(format!(
                "serialization method '{}' is not supported: sign with the files method",
                other.unwrap_or("")
            )));
        }
    }
    let (hash, algorithm) = match serialization["hash_type"].as_str() {
        Some("sha256") => (Hash::Sha256, "sha256"),
        Some("blake3") => (Hash::Blake3, "blake3"),
        _ => {
            return Err(bad(format!(
                "hash type {} is not supported: sign with sha256 or blake3",
                serialization["hash_type"]
            )));
        }
    };
    let subjects = statement["subject"].as_array().map(Vec::as_slice).unwrap_or_default();
    let [subject] = subjects else {
        return Err(bad(format!("the statement has {} subjects, not one", subjects.len())));
    };
    let mut all = ring::digest::Context::new(&ring::digest::SHA256);
    let mut files = BTreeMap::new();
    for r in predicate["resources"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let (Some(name), Some(digest)) = (r["name"].as_str(), r["digest"].as_str()) else {
            return Err(bad("a resource lacks its name or digest"));
        };
        if r["algorithm"] != algorithm {
            return Err(bad(format!("resource '{name}' is not hashed with {algorithm}")));
        }
        let raw =
            unhex(digest).ok_or_else(|| bad(format!("resource '{name}': malformed digest")))?;
        all.update(&raw);
        if files.insert(name.to_string(), digest.to_ascii_lowercase()).is_some() {
            return Err(bad(format!("resource '{name}' is listed twice")));
        }
    }
    if subject["digest"]["sha256"].as_str() != Some(hex(all.finish().as_ref()).as_str()) {
        return Err(bad(
            "the statement is inconsistent: its subject digest does not cover its resources",
        ));
    }
    Ok((hash, files))
}

/// The v0.1 predicate (model-signing 0.2): each file is a subject.
fn files_v01(statement: &Value) -> Result<BTreeMap<String, String>, SigningError> {
    let mut files = BTreeMap::new();
    for s in statement["subject"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let (Some(name), Some(digest)) = (s["name"].as_str(), s["digest"]["sha256"].as_str())
        else {
            return Err(bad("a subject lacks its name or sha256 digest"));
        };
        unhex(digest).ok_or_else(|| bad(format!("subject '{name}': malformed digest")))?;
        if files.insert(name.to_string(), digest.to_ascii_lowercase()).is_some() {
            return Err(bad(format!("subject '{name}' is listed twice")));
        }
    }
    Ok(files)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// DSSE's pre-authentication encoding.
fn pae(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {IN_TOTO} {} ", IN_TOTO.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The encoding model-signing 0.2 signed by mistake (Python's `repr` of the payload bytes in a string); the
/// reference verifier still accepts it.
fn pae_compat(payload: &[u8]) -> Vec<u8> {
    format!("DSSEV1 {} {IN_TOTO} {} {}", IN_TOTO.len(), payload.len(), python_bytes_repr(payload))
        .into_bytes()
}

pub(crate) fn python_bytes_repr(data: &[u8]) -> String {
    let quote = if data.contains(&b'\'') && !data.contains(&b'"') { '"' } else { '\'' };
    let mut out = format!("b{quote}");
    for &b in data {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if b as char == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote);
    out
}
