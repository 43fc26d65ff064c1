//! Repository agents (`model_repository_agents` in a config): built into Rampart and run before a model
//! loads, on every way it arrives (startup, poll, explicit load, config and file overrides). Triton loads
//! agents as shared libraries from `--repoagent-directory`; Rampart never loads code from there, and an
//! agent it does not have fails the load instead of being skipped.
//!
//! `checksum` is Triton's checksum agent: each parameter `MD5:<file>` (or, beyond Triton, `SHA256:<file>`)
//! holds the lowercase hex digest the file must have, with Triton's messages. Unlike Triton's, the file must
//! stay inside the model directory (no `..`, no absolute path, no symbolic link out of it).

use std::io::Read;
use std::path::Path;

use rampart_model_config::ModelConfig;
use rampart_types::{Code, Error, Result};

/// The agents Rampart has.
pub const BUILT_IN: &[&str] = &["checksum"];

/// Runs the config's agents, in order, on the model directory `dir`.
pub(crate) fn run(config: &ModelConfig, dir: &Path) -> Result<()> {
    let Some(agents) = &config.model_repository_agents else { return Ok(()) };
    for agent in &agents.agents {
        match agent.name.as_str() {
            "checksum" => {
                // A protobuf map has no order: the files are checked in name order, so the first failure
                // reported is always the same one.
                let mut parameters: Vec<(&String, &String)> = agent.parameters.iter().collect();
                parameters.sort();
                for (key, expected) in parameters {
                    checksum(dir, key, expected)?;
                }
            }
            other => {
                return Err(Error::invalid_arg(format!(
                    "unknown repository agent '{other}': Rampart's agents are built in ({}); none is \
                     loaded from --repoagent-directory",
                    BUILT_IN.join(", ")
                )));
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA256",
        }
    }
}

/// One `checksum` parameter: `<algorithm>:<relative file>` → the expected hex digest.
fn checksum(dir: &Path, key: &str, expected: &str) -> Result<()> {
    let Some((algorithm, file)) = key.split_once(':') else {
        return Err(Error::invalid_arg(format!("failed to parse key: {key}")));
    };
    let kind = match algorithm.to_ascii_lowercase().as_str() {
        "md5" => Algorithm::Md5,
        "sha256" => Algorithm::Sha256,
        _ => {
            return Err(Error::new(
                Code::Unsupported,
                format!("Unsupported checksum algorithm: {algorithm}"),
            ));
        }
    };
    let outside = |why: String| {
        Error::invalid_arg(format!("checksum agent: file '{file}' is refused: {why}"))
    };
    let rel = crate::repository::check_relative_path(file).map_err(outside)?;
    let path = dir.join(rel);
    let open_error = |e: std::io::Error| {
        Error::invalid_arg(format!("failed to open text file for read {file}: {e}"))
    };
    let real = std::fs::canonicalize(&path).map_err(open_error)?;
    let root = std::fs::canonicalize(dir).map_err(open_error)?;
    if !real.starts_with(&root) {
        return Err(outside("a symbolic link leads outside the model directory".into()));
    }
    let got = digest(kind, &real).map_err(open_error)?;
    if got != expected {
        return Err(Error::invalid_arg(format!(
            "Mismatched {} hash for file {file}, expect: {expected}, got: {got}",
            kind.name()
        )));
    }
    Ok(())
}

/// The lowercase hex digest of a file, read in chunks (model files can be large).
fn digest(kind: Algorithm, path: &Path) -> std::io::Result<String> {
    use md5::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut md5 = md5::Md5::new();
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        match kind {
            Algorithm::Md5 => md5.update(&buf[..n]),
            Algorithm::Sha256 => sha.update(&buf[..n]),
        }
    }
    let bytes: Vec<u8> = match kind {
        Algorithm::Md5 => md5.finalize().to_vec(),
        Algorithm::Sha256 => sha.finish().as_ref().to_vec(),
    };
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, parameters: &[(&str, &str)]) -> ModelConfig {
        use rampart_model_config::pb::model_repository_agents::Agent;
        let agent = Agent {
            name: name.into(),
            parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        ModelConfig {
            model_repository_agents: Some(rampart_model_config::pb::ModelRepositoryAgents {
                agents: vec![agent],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn digests_match_the_known_vectors_and_every_failure_says_why() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"abc").unwrap();
        let md5 = "900150983cd24fb0d6963f7d28e17f72";
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        run(&config("checksum", &[("MD5:f", md5), ("sha256:./f", sha)]), dir.path()).unwrap();
        let e = run(&config("checksum", &[("MD5:f", "00")]), dir.path()).unwrap_err();
        assert_eq!(e.message(), format!("Mismatched MD5 hash for file f, expect: 00, got: {md5}"));
        let e = run(&config("checksum", &[("CRC32:f", "00")]), dir.path()).unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unsupported, "Unsupported checksum algorithm: CRC32")
        );
        let e = run(&config("checksum", &[("f", "00")]), dir.path()).unwrap_err();
        assert_eq!(e.message(), "failed to parse key: f");
        let e = run(&config("checksum", &[("MD5:../f", md5)]), dir.path()).unwrap_err();
        assert!(e.message().contains("stay within the model directory"), "{e}");
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
        let e = run(&config("checksum", &[("MD5:link", md5)]), dir.path()).unwrap_err();
        assert!(e.message().contains("outside the model directory"), "{e}");
        let e = run(&config("checksum", &[("MD5:missing", md5)]), dir.path()).unwrap_err();
        assert!(e.message().starts_with("failed to open text file for read missing: "), "{e}");
        let e = run(&config("checksum_repository_agent", &[]), dir.path()).unwrap_err();
        assert!(
            e.message().contains("unknown repository agent 'checksum_repository_agent'"),
            "{e}"
        );
    }
}
