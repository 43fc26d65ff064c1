//! Hashing a model directory (the reference tool's `files` method) and comparing it with a signed manifest.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::bundle::Hash;
use crate::key::hex;
use crate::{SIGNATURE_FILE, SigningError};

/// Top-level paths the reference tool ignores by default, besides the signature itself.
const IGNORED: &[&str] = &[SIGNATURE_FILE, ".git", ".gitignore", ".gitattributes", ".github"];
/// Most entries walked in one model directory.
const MAX_ENTRIES: usize = 100_000;

/// Every regular file under `dir` (relative path, hex digest of `kind`) in name order, copied under `snapshot` when
/// given. A symbolic link or anything but a file or directory fails.
pub(crate) fn hash(
    dir: &Path,
    kind: Hash,
    snapshot: Option<&Path>,
) -> Result<Vec<(String, String)>, SigningError> {
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    let mut seen = 0usize;
    while let Some(rel) = stack.pop() {
        let entries = std::fs::read_dir(dir.join(&rel)).map_err(|e| {
            SigningError::new(format!("cannot read directory '{}': {e}", shown(&rel)))
        })?;
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let child = rel.join(&name);
            let label = shown(&child);
            if rel.as_os_str().is_empty() && IGNORED.iter().any(|i| name == *i) {
                continue;
            }
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(SigningError::new(format!("more than {MAX_ENTRIES} files")));
            }
            let Some(text) = child.to_str() else {
                return Err(SigningError::at(&label, format!("file name '{label}' is not UTF-8")));
            };
            let meta = std::fs::symlink_metadata(dir.join(&child))
                .map_err(|e| SigningError::at(text, format!("cannot read '{text}': {e}")))?;
            if meta.is_dir() {
                if let Some(out) = snapshot {
                    std::fs::create_dir_all(out.join(&child)).map_err(|e| {
                        SigningError::at(text, format!("snapshot of '{text}': {e}"))
                    })?;
                }
                stack.push(child);
            } else if meta.is_file() {
                files.push((text.to_string(), digest(dir, &child, kind, snapshot)?));
            } else {
                let what =
                    if meta.file_type().is_symlink() { "a symbolic link" } else { "not a file" };
                return Err(SigningError::at(
                    text,
                    format!("file '{text}' is {what}: signed models hold plain files"),
                ));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The digest of one file, copied to the snapshot as it is read.
fn digest(
    dir: &Path,
    rel: &Path,
    kind: Hash,
    snapshot: Option<&Path>,
) -> Result<String, SigningError> {
    let label = shown(rel);
    let fail = |e: std::io::Error| SigningError::at(&label, format!("cannot read '{label}': {e}"));
    let mut file = std::fs::File::open(dir.join(rel)).map_err(fail)?;
    let mut copy = match snapshot {
        Some(out) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(out.join(rel))
                .map_err(|e| SigningError::at(&label, format!("snapshot of '{label}': {e}")))?,
        ),
        None => None,
    };
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut b3 = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        match kind {
            Hash::Sha256 => sha.update(&buf[..n]),
            Hash::Blake3 => {
                b3.update(&buf[..n]);
            }
        }
        if let Some(c) = copy.as_mut() {
            c.write_all(&buf[..n])
                .map_err(|e| SigningError::at(&label, format!("snapshot of '{label}': {e}")))?;
        }
    }
    Ok(match kind {
        Hash::Sha256 => hex(sha.finish().as_ref()),
        Hash::Blake3 => b3.finalize().to_hex().to_string(),
    })
}

fn shown(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

/// The directory's files must be exactly the signed ones, with the signed digests.
pub(crate) fn compare(
    signed: &BTreeMap<String, String>,
    found: &[(String, String)],
) -> Result<(), SigningError> {
    let present: BTreeMap<&str, &str> =
        found.iter().map(|(n, d)| (n.as_str(), d.as_str())).collect();
    // Name order, so the first failing file reported is always the same one.
    let mut names: Vec<&str> =
        signed.keys().map(String::as_str).chain(present.keys().copied()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        match (signed.get(name), present.get(name)) {
            (Some(want), Some(got)) if want == got => {}
            (Some(_), Some(_)) => {
                return Err(SigningError::at(
                    name,
                    format!("file '{name}' does not match its signed digest"),
                ));
            }
            (Some(_), None) => {
                return Err(SigningError::at(name, format!("file '{name}' is signed but missing")));
            }
            (None, _) => {
                return Err(SigningError::at(
                    name,
                    format!("file '{name}' is not covered by the signature"),
                ));
            }
        }
    }
    Ok(())
}
