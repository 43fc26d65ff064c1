//! Against directories signed by the reference tool (`tests/data/README.md`): they verify, and each kind of
//! tampering fails naming the file.

use std::path::{Path, PathBuf};

use super::*;

fn data(curve: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(curve)
}

fn key(curve: &str) -> TrustedKey {
    TrustedKey::from_pem(&std::fs::read_to_string(data(curve).join("key.pub.pem")).unwrap())
        .unwrap()
}

/// A copy of a signed model to tamper with.
fn copy(curve: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    copy_dir(&data(curve).join("model"), out.path());
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn trust(keys: &[TrustedKey]) -> Trust {
    Trust { keys: keys.to_vec(), roots: Vec::new() }
}

fn failure(dir: &Path, keys: &[TrustedKey]) -> SigningError {
    verify_dir(dir, &trust(keys), None).unwrap_err()
}

#[test]
fn directories_signed_by_the_reference_tool_verify_with_p256_and_p384_keys() {
    for curve in ["p256", "p384"] {
        let k = key(curve);
        let v =
            verify_dir(&data(curve).join("model"), &trust(std::slice::from_ref(&k)), None).unwrap();
        assert_eq!(v.signer, format!("key {}", k.fingerprint()));
        let names: Vec<&str> = v.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["1/model.onnx", "config.pbtxt"], "{curve}");
    }
}

#[test]
fn a_directory_hashed_with_blake3_verifies_and_a_changed_byte_fails() {
    let k = [key("blake3")];
    let v = verify_dir(&data("blake3").join("model"), &trust(&k), None).unwrap();
    let config = v.files.iter().find(|(n, _)| n == "config.pbtxt").unwrap();
    // BLAKE3 of the file, as Python's `blake3` package computes it.
    assert_eq!(config.1, "c9c61b449a14526a9cbd4b32f3ab028c6ebc352f6bba7cb30e4128aae716074a");
    let d = copy("blake3");
    std::fs::write(d.path().join("config.pbtxt"), b"changed").unwrap();
    assert_eq!(
        failure(d.path(), &k).message,
        "file 'config.pbtxt' does not match its signed digest"
    );
}

#[test]
fn the_fingerprint_is_the_reference_tool_s_key_hint() {
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("p256").join("model/model.sig")).unwrap())
            .unwrap();
    assert_eq!(bundle["verificationMaterial"]["publicKey"]["hint"], key("p256").fingerprint());
}

#[test]
fn a_snapshot_holds_the_verified_bytes() {
    let out = tempfile::tempdir().unwrap();
    let model = data("p256").join("model");
    verify_dir(&model, &trust(&[key("p256")]), Some(out.path())).unwrap();
    for f in ["1/model.onnx", "config.pbtxt"] {
        assert_eq!(
            std::fs::read(out.path().join(f)).unwrap(),
            std::fs::read(model.join(f)).unwrap()
        );
    }
    assert!(!out.path().join(SIGNATURE_FILE).exists());
}

#[test]
fn every_kind_of_tampering_fails_naming_the_file() {
    let k = [key("p256")];
    let d = copy("p256");
    let onnx = d.path().join("1/model.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&onnx, &bytes).unwrap();
    let e = failure(d.path(), &k);
    assert_eq!(
        (e.file.as_deref(), e.message.as_str()),
        (Some("1/model.onnx"), "file '1/model.onnx' does not match its signed digest")
    );

    let d = copy("p256");
    std::fs::write(d.path().join("1/extra.txt"), b"x").unwrap();
    let e = failure(d.path(), &k);
    assert_eq!(e.message, "file '1/extra.txt' is not covered by the signature");

    let d = copy("p256");
    std::fs::remove_file(d.path().join("config.pbtxt")).unwrap();
    assert_eq!(failure(d.path(), &k).message, "file 'config.pbtxt' is signed but missing");

    let d = copy("p256");
    std::fs::remove_file(d.path().join("config.pbtxt")).unwrap();
    std::os::unix::fs::symlink(
        data("p256").join("model/config.pbtxt"),
        d.path().join("config.pbtxt"),
    )
    .unwrap();
    let e = failure(d.path(), &k);
    assert_eq!(e.file.as_deref(), Some("config.pbtxt"));
    assert!(e.message.contains("is a symbolic link"), "{e}");

    let d = copy("p256");
    std::fs::create_dir(d.path().join(".git")).unwrap();
    std::fs::write(d.path().join(".git/HEAD"), b"ref").unwrap();
    std::fs::write(d.path().join(".gitignore"), b"*.tmp").unwrap();
    verify_dir(d.path(), &trust(&k), None)
        .expect("git files are ignored, as by the reference tool");
}

#[test]
fn a_wrong_key_an_unsigned_directory_and_a_forged_statement_fail() {
    let e = failure(&data("p256").join("model"), &[key("p384")]);
    assert!(
        e.message.starts_with("model.sig is not signed by a trusted key (it names key "),
        "{e}"
    );

    let d = copy("p256");
    std::fs::remove_file(d.path().join(SIGNATURE_FILE)).unwrap();
    let e = failure(d.path(), &[key("p256")]);
    assert!(e.message.starts_with("the model is not signed: cannot read model.sig"), "{e}");

    // A statement changed after signing (a digest swapped for the tampered file's) no longer verifies.
    let d = copy("p256");
    let sig = d.path().join(SIGNATURE_FILE);
    let mut bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap();
    let mut statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    statement["predicate"]["resources"][0]["digest"] = "00".repeat(32).into();
    bundle["dsseEnvelope"]["payload"] = b64.encode(serde_json::to_vec(&statement).unwrap()).into();
    std::fs::write(&sig, serde_json::to_vec(&bundle).unwrap()).unwrap();
    assert!(
        failure(d.path(), &[key("p256")])
            .message
            .starts_with("model.sig is not signed by a trusted key")
    );

    assert!(
        verify_dir(&data("p256").join("model"), &Trust::default(), None)
            .unwrap_err()
            .message
            .contains("no trusted key or root")
    );
}

fn root(file: &str) -> Vec<TrustedRoot> {
    TrustedRoot::from_pem(&std::fs::read_to_string(data("cert").join(file)).unwrap()).unwrap()
}

fn roots(file: &str) -> Trust {
    Trust { keys: Vec::new(), roots: root(file) }
}

#[test]
fn a_certificate_chain_to_a_trusted_root_verifies_and_names_the_signer() {
    let v = verify_dir(&data("cert").join("model"), &roots("root.pem"), None).unwrap();
    assert_eq!(v.signer, "certificate 'CN=model-signer@example.com' (root 'CN=Rampart Test Root')");
    // A tampered file still fails, as with a key.
    let d = tempfile::tempdir().unwrap();
    copy_dir(&data("cert").join("model"), d.path());
    std::fs::write(d.path().join("config.pbtxt"), b"changed").unwrap();
    let e = verify_dir(d.path(), &roots("root.pem"), None).unwrap_err();
    assert_eq!(e.message, "file 'config.pbtxt' does not match its signed digest");
}

#[test]
fn a_chain_to_another_root_no_root_or_a_leaf_that_may_not_sign_fails() {
    let model = data("cert").join("model");
    let e = verify_dir(&model, &roots("other_root.pem"), None).unwrap_err();
    assert!(e.message.contains("does not chain to a trusted root"), "{e}");
    assert_eq!(e.file.as_deref(), Some(SIGNATURE_FILE));
    // Trusted keys do not vouch for certificates.
    let e = verify_dir(&model, &trust(&[key("p256")]), None).unwrap_err();
    assert!(e.message.contains("no trusted root is configured"), "{e}");
    // The reference verifier's rule: digitalSignature or codeSigning (this leaf is a TLS server's).
    let e = verify_dir(&data("cert").join("no_usage_model"), &roots("root.pem"), None).unwrap_err();
    assert!(e.message.contains("may not sign"), "{e}");
    // A root file that holds a key, not a certificate.
    let e =
        TrustedRoot::from_pem(&std::fs::read_to_string(data("p256").join("key.pub.pem")).unwrap())
            .unwrap_err();
    assert!(e.message.contains("not 'PUBLIC KEY'"), "{e}");
}

#[test]
fn keys_other_than_ecdsa_p256_and_p384_are_refused() {
    assert!(TrustedKey::from_pem("nothing").is_err());
    let e = TrustedKey::from_pem("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n")
        .unwrap_err();
    assert!(e.message.contains("not 'PRIVATE KEY'"), "{e}");
}

#[test]
fn the_compat_encoding_reproduces_python_s_bytes_repr() {
    // Python's own repr() of each input (model-signing 0.2 signed over it).
    let cases: [(&[u8], &str); 4] = [
        (br#"{"a": 1}"#, r#"b'{"a": 1}'"#),
        (b"it's", r#"b"it's""#),
        (br#"both '" q"#, r#"b'both \'" q'"#),
        (b"\\ \t\n\r\x00\x7f\xff", r"b'\\ \t\n\r\x00\x7f\xff'"),
    ];
    for (input, python) in cases {
        assert_eq!(bundle::python_bytes_repr(input), python);
    }
}
