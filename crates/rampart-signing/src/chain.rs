//! Certificate-chain signatures: a `model.sig` whose verification material is an X.509 chain, leaf first (the
//! reference tool's `model_signing sign certificate`). As the reference verifier has it, the chain must lead to a
//! configured root certificate when checked at the leaf's issue time (no timestamp authority says when the
//! signature was made, so a short-lived signing certificate keeps verifying after it expires), and the leaf must
//! allow signing: key usage `digitalSignature`, or extended key usage `codeSigning`.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::SigningError;
use crate::key::{TrustedKey, pem_blocks};

/// Chain certificates read from one signature, at most (the reference tool writes the leaf and its chain).
const MAX_CHAIN: usize = 8;
/// The extended key usage `codeSigning` (1.3.6.1.5.5.7.3.3).
const CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";

/// A root certificate that signing certificates may chain to (`--model-signature-root`).
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    anchor: TrustAnchor<'static>,
    subject: String,
}

impl TrustedRoot {
    /// Every `CERTIFICATE` of PEM text (a bundle may hold several roots).
    pub fn from_pem(text: &str) -> Result<Vec<TrustedRoot>, SigningError> {
        let mut roots = Vec::new();
        for (label, der) in pem_blocks(text)? {
            if label != "CERTIFICATE" {
                return Err(SigningError::new(format!(
                    "a trusted root is a PEM 'CERTIFICATE', not '{label}'"
                )));
            }
            let (_, cert) = X509Certificate::from_der(&der).map_err(|e| {
                SigningError::new(format!("a root certificate does not parse: {e}"))
            })?;
            let subject = cert.subject().to_string();
            let anchor = webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                .map_err(|e| {
                    SigningError::new(format!("root certificate '{subject}' is not usable: {e}"))
                })?
                .to_owned();
            roots.push(TrustedRoot { anchor, subject });
        }
        Ok(roots)
    }

    /// The root's subject name.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// The signing key of `chain` (DER certificates, leaf first) once the chain leads to one of `roots`, and who
/// signed: the leaf's subject and the root it chains to.
pub(crate) fn leaf_key(
    chain: &[Vec<u8>],
    roots: &[TrustedRoot],
) -> Result<(TrustedKey, String), SigningError> {
    let bad = |m: String| SigningError::at(crate::SIGNATURE_FILE, m);
    let Some((leaf_der, intermediates)) = chain.split_first() else {
        return Err(bad("the signature's certificate chain is empty".into()));
    };
    if chain.len() > MAX_CHAIN {
        return Err(bad(format!("the certificate chain has more than {MAX_CHAIN} certificates")));
    }
    if roots.is_empty() {
        return Err(bad(
            "the model is signed with a certificate, and no trusted root is configured \
                        (--model-signature-root)"
                .into(),
        ));
    }
    let (_, leaf) = X509Certificate::from_der(leaf_der)
        .map_err(|e| bad(format!("the signing certificate does not parse: {e}")))?;
    let subject = leaf.subject().to_string();
    let issued = leaf.validity().not_before.timestamp();
    let leaf_cert = CertificateDer::from(leaf_der.as_slice());
    let end_entity = EndEntityCert::try_from(&leaf_cert)
        .map_err(|e| bad(format!("the signing certificate '{subject}' is malformed: {e}")))?;
    let intermediates: Vec<CertificateDer<'_>> =
        intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    let anchors: Vec<TrustAnchor<'_>> = roots.iter().map(|r| r.anchor.clone()).collect();
    let time = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(issued).unwrap_or(0)));
    let path = end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            AnyUsage,
            None,
            None,
        )
        .map_err(|e| {
            bad(format!(
                "the signing certificate '{subject}' does not chain to a trusted root: {e:?}"
            ))
        })?;
    if !may_sign(&leaf) {
        return Err(bad(format!(
            "the signing certificate '{subject}' may not sign: it has neither key usage \
             digitalSignature nor extended key usage codeSigning"
        )));
    }
    let anchor = path.anchor();
    let root = roots
        .iter()
        .find(|r| r.anchor.subject_public_key_info == anchor.subject_public_key_info)
        .map_or("?", |r| r.subject());
    let key = TrustedKey::from_spki(leaf.tbs_certificate.subject_pki.raw)
        .map_err(|e| bad(format!("the signing certificate '{subject}': {e}")))?;
    Ok((key, format!("certificate '{subject}' (root '{root}')")))
}

/// The reference verifier's rule: key usage digitalSignature, or extended key usage codeSigning.
fn may_sign(leaf: &X509Certificate<'_>) -> bool {
    let digital_signature =
        leaf.key_usage().ok().flatten().is_some_and(|u| u.value.digital_signature());
    let code_signing = leaf.extended_key_usage().ok().flatten().is_some_and(|u| {
        u.value.code_signing || u.value.other.iter().any(|o| o.to_id_string() == CODE_SIGNING)
    });
    digital_signature || code_signing
}

/// The path is checked for any extended key usage; [`may_sign`] applies the reference's rule to the leaf.
struct AnyUsage;

impl ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}
