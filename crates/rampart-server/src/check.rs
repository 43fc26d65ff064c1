//! `rampart check <repository> [--format text|json] [--strict] [server flags…]`: the offline repository
//! linter. It loads the repository with the server's own loading code (the same flags, the same backends,
//! Python models in their sandbox) without opening a listener, then reports every problem at once, each with
//! the file and a fix, and checks what loading does not: files and directories anyone may write, and
//! symbolic links that lead out of the repository.
//!
//! Exit status: 0 clean, 1 errors (or warnings with `--strict`), 2 bad usage. The JSON output
//! (`docs/operations.md`, "rampart check") is stable: CI pipelines read it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use crate::cli;

const USAGE: &str =
    "usage: rampart check <repository> [--format text|json] [--strict] [server flags…]";
/// Entries walked at most in one repository (a larger tree is reported, not walked on).
const MAX_ENTRIES: usize = 200_000;

/// One problem found.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// `error` or `warning`.
    pub severity: &'static str,
    /// Which check found it: `repository`, `load`, `permissions`, `symlink` or `typo`.
    pub check: &'static str,
    /// The model it concerns (empty for the repository as a whole).
    pub model: String,
    /// The version it concerns (empty when not one version).
    pub version: String,
    /// The file or directory, relative to the repository.
    pub file: String,
    pub message: String,
    pub fix: String,
}

#[derive(Serialize)]
struct Report<'a> {
    repository: &'a str,
    ok: bool,
    errors: usize,
    warnings: usize,
    /// Every model version the loading code saw, with its state.
    models: Vec<ModelRow>,
    findings: &'a [Finding],
}

#[derive(Serialize)]
struct ModelRow {
    name: String,
    version: String,
    state: String,
}

struct Args {
    repository: String,
    json: bool,
    strict: bool,
    /// The remaining arguments: server flags, parsed as the server parses them.
    server: Vec<String>,
}

/// Runs the check when the first argument is `check`; `None` otherwise.
pub fn from_args(args: &[String]) -> Option<ExitCode> {
    if args.get(1).map(String::as_str) != Some("check") {
        return None;
    }
    let args = match parse(&args[2..]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return Some(ExitCode::from(2));
        }
    };
    Some(match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    })
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut out =
        Args { repository: String::new(), json: false, strict: false, server: Vec::new() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--strict" => out.strict = true,
            "--format" => out.json = format(it.next().map(String::as_str))?,
            f if f.starts_with("--format=") => out.json = format(Some(&f["--format=".len()..]))?,
            "-h" | "--help" => return Err("help".into()),
            // Every server flag takes a value: `--flag=value`, or `--flag value`.
            f if f.starts_with('-') => {
                out.server.push(f.to_string());
                if !f.contains('=') {
                    out.server.push(it.next().ok_or_else(|| format!("{f} needs a value"))?.clone());
                }
            }
            repository if out.repository.is_empty() => out.repository = repository.to_string(),
            extra => {
                return Err(format!(
                    "one repository is checked at a time; '{extra}' is a second one"
                ));
            }
        }
    }
    if out.repository.is_empty() {
        return Err("no repository given".into());
    }
    Ok(out)
}

fn format(value: Option<&str>) -> Result<bool, String> {
    match value {
        Some("text") => Ok(false),
        Some("json") => Ok(true),
        other => Err(format!("--format takes text or json, not '{}'", other.unwrap_or(""))),
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let root = Path::new(&args.repository);
    if !root.is_dir() {
        return Err(format!("'{}' is not a directory", args.repository));
    }
    let mut findings = filesystem(root);
    let models = load(args, &mut findings)?;
    let errors = findings.iter().filter(|f| f.severity == "error").count();
    let warnings = findings.len() - errors;
    let ok = errors == 0 && (warnings == 0 || !args.strict);
    if args.json {
        let report = Report {
            repository: &args.repository,
            ok,
            errors,
            warnings,
            models,
            findings: &findings,
        };
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", text(&args.repository, &models, &findings, (errors, warnings)));
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn text(
    repository: &str,
    models: &[ModelRow],
    findings: &[Finding],
    (errors, warnings): (usize, usize),
) -> String {
    let mut out = String::new();
    for f in findings {
        let at = if f.version.is_empty() {
            f.file.clone()
        } else {
            format!("{} (version {})", f.file, f.version)
        };
        out += &format!("{} [{}] {at}: {}\n    fix: {}\n", f.severity, f.check, f.message, f.fix);
    }
    let ready = models.iter().filter(|m| m.state == "READY").count();
    out += &format!(
        "{repository}: {ready} of {} model versions load; {errors} errors, {warnings} warnings\n",
        models.len(),
    );
    out
}

/// Loads the repository as the server would (every model, whatever `--model-control-mode` says) and turns
/// each model version that does not load into a finding.
fn load(args: &Args, findings: &mut Vec<Finding>) -> Result<Vec<ModelRow>, String> {
    let mut argv = vec!["rampart".to_string(), format!("--model-repository={}", args.repository)];
    argv.extend(args.server.iter().cloned());
    let mut cli = cli::Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    cli.repository.model_control_mode = "none".into();
    cli.repository.exit_on_error = false;
    let mut validated = cli.validate().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(1)
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let model_access = std::sync::Arc::new(std::mem::take(&mut validated.model_access));
    let options = crate::server_options(
        &cli,
        &validated,
        runtime.handle().clone(),
        model_access,
        None,
        None,
    )?;
    let server = match rampart_core::Server::start(options) {
        Ok(s) => s,
        Err(e) => {
            findings.push(Finding {
                severity: "error",
                check: "repository",
                model: String::new(),
                version: String::new(),
                file: String::new(),
                message: e.to_string(),
                fix: "fix the repository as the message says (model names and folders)".into(),
            });
            return Ok(Vec::new());
        }
    };
    let mut rows = Vec::new();
    for e in server.repository_index(false) {
        let state = e.state.map_or("UNAVAILABLE", |s| s.as_str()).to_string();
        if state != "READY" {
            let config = Path::new(&args.repository).join(&e.name).join("config.pbtxt");
            let file = failing_file(&e.reason, &e.name, Path::new(&args.repository))
                .unwrap_or_else(|| {
                    if config.exists() {
                        format!("{}/config.pbtxt", e.name)
                    } else {
                        e.name.clone()
                    }
                });
            findings.push(Finding {
                severity: "error",
                check: "load",
                model: e.name.clone(),
                version: e.version.clone(),
                file,
                fix: fix_for(&e.reason),
                message: e.reason.clone(),
            });
        }
        rows.push(ModelRow { name: e.name, version: e.version, state });
    }
    findings.extend(parameter_typos(&server, &rows));
    runtime.block_on(server.shutdown(Duration::from_secs(cli.exit_timeout_secs.min(10))));
    drop(server);
    Ok(rows)
}

/// `parameters` keys of the models that loaded which look like misspellings of keys the server reads
/// (warnings: a `model.py` may read keys of its own).
fn parameter_typos(server: &rampart_core::Server, rows: &[ModelRow]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for row in rows.iter().filter(|r| r.state == "READY" && seen.insert(r.name.clone())) {
        let version = row.version.parse().ok();
        let Ok(config) = server.model_config(&row.name, version) else { continue };
        let mut keys: Vec<&String> = config.parameters.keys().collect();
        keys.sort();
        for key in keys {
            let Some(known) = rampart_core::parameter_suggestion(key) else { continue };
            findings.push(Finding {
                severity: "warning",
                check: "typo",
                model: row.name.clone(),
                version: String::new(),
                file: format!("{}/config.pbtxt", row.name),
                message: format!(
                    "parameter '{key}' is not one the server reads; did you mean '{known}'?"
                ),
                fix: format!(
                    "rename the key to '{known}' (or keep it if the model's own code reads it)"
                ),
            });
        }
    }
    findings
}

/// The repository file a load error of `model` points at, relative to the repository: the file a signature
/// check failed on, a label file, a file the message quotes by its path in the repository (a model file,
/// warmup and initial-state data), or the innermost traceback frame (a `model.py` line).
fn failing_file(reason: &str, model: &str, root: &Path) -> Option<String> {
    // A signature failure names the file, relative to the model directory.
    if let Some(at) = reason.find("signature check failed: ") {
        let rest = &reason[at..];
        let file = match rest.find("file '") {
            Some(i) => rest[i + 6..].split('\'').next()?,
            None => "model.sig",
        };
        return Some(format!("{model}/{file}"));
    }
    // A label file that stays in the model directory is the file; one that leaves it is the config's fault.
    if let Some(at) = reason.find("label_filename '") {
        let file = reason[at + 16..].split('\'').next()?;
        let inside = Path::new(file).components().all(|c| matches!(c, Component::Normal(_)));
        return Some(if inside {
            format!("{model}/{file}")
        } else {
            format!("{model}/config.pbtxt")
        });
    }
    if let Some(file) = quoted_repository_path(reason, root) {
        return Some(file);
    }
    let root = std::fs::canonicalize(root).ok()?;
    reason
        .match_indices("File \"")
        .filter_map(|(at, m)| {
            let rest = &reason[at + m.len()..];
            let path = Path::new(&rest[..rest.find('"')?]);
            let real = std::fs::canonicalize(path).ok()?;
            Some(real.strip_prefix(&root).ok()?.display().to_string())
        })
        .last()
}

/// The first `'…'` in `reason` that is a path inside a model directory (a model file that does not open,
/// warmup or initial-state data), relative to the repository.
fn quoted_repository_path(reason: &str, root: &Path) -> Option<String> {
    let roots = [root.to_path_buf(), std::fs::canonicalize(root).ok()?];
    reason.split('\'').skip(1).step_by(2).find_map(|quoted| {
        let path = Path::new(quoted);
        roots
            .iter()
            .find_map(|r| path.strip_prefix(r).ok())
            .filter(|rel| {
                rel.components().count() > 1
                    && rel.components().all(|c| matches!(c, Component::Normal(_)))
            })
            .map(|rel| rel.display().to_string())
    })
}

/// A fix for a load failure, from what its message says.
fn fix_for(reason: &str) -> String {
    let known = [
        (
            "python backend cannot",
            "install Python 3.9+ with numpy, or point --backend-config=python,interpreter=<path> at one",
        ),
        (
            "signature check failed",
            "sign the model directory again (model_signing sign key) or restore the signed files",
        ),
        ("SyntaxError", "fix the syntax error in the model file at the line shown"),
        (
            "label_filename",
            "put the label file (one label per line) in the model directory, and name it relative to it",
        ),
        (
            "model_warmup",
            "put the warmup data in the model's warmup/ folder with the size the input needs, or fix model_warmup",
        ),
        (
            "initial state",
            "put the state's data file in the model's initial_state/ folder with the size the state needs",
        ),
        (
            "sequence control",
            "make the control's data type and shape those of the model's input of that name",
        ),
        (
            "ensemble",
            "add the models the ensemble's steps name to the repository, or fix the steps in config.pbtxt",
        ),
        (
            "cannot load '",
            "the model file does not open on this engine: export it again, or check it with the engine's own tools",
        ),
        ("File \"", "fix the Python error at the model line the traceback shows"),
        (
            "ONNX Runtime library",
            "pass the server's --backend-directory (or ORT_DYLIB_PATH) to rampart check too",
        ),
        ("config.pbtxt", "fix config.pbtxt at the place the message names"),
        (
            "no version directories",
            "add a numeric version folder such as 1/ holding the model file",
        ),
    ];
    known
        .iter()
        .find(|(needle, _)| reason.contains(needle))
        .map_or("fix the model as the message says, then run rampart check again", |(_, fix)| fix)
        .to_string()
}

/// World-writable files and directories, and symbolic links that lead out of the repository.
fn filesystem(root: &Path) -> Vec<Finding> {
    let mut findings = Vec::new();
    let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut seen = 0usize;
    while let Some(path) = stack.pop() {
        seen += 1;
        if seen > MAX_ENTRIES {
            findings.push(finding(
                "warning",
                "permissions",
                root,
                &path,
                format!(
                    "more than {MAX_ENTRIES} entries: the rest of the repository was not checked"
                ),
                "keep only model files in the repository",
            ));
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.file_type().is_symlink() {
            let target = std::fs::canonicalize(&path);
            if !target.as_ref().is_ok_and(|t| t.starts_with(&real_root)) {
                let to =
                    std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
                findings.push(finding(
                    "error",
                    "symlink",
                    root,
                    &path,
                    format!("symbolic link to '{to}' leads outside the repository"),
                    "copy the file into the repository, or remove the link",
                ));
            }
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 {
            let what = if meta.is_dir() { "directory" } else { "file" };
            findings.push(finding("error", "permissions", root, &path,
                format!("{what} is writable by every user (mode {:o}): anyone on the host can change what the server runs", mode & 0o7777),
                &format!("chmod o-w '{}'", path.display())));
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            children.sort_unstable_by(|a, b| b.cmp(a));
            stack.extend(children);
        }
    }
    findings
}

fn finding(
    severity: &'static str,
    check: &'static str,
    root: &Path,
    path: &Path,
    message: String,
    fix: &str,
) -> Finding {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let file = if rel.as_os_str().is_empty() { ".".to_string() } else { rel.display().to_string() };
    let model = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
    Finding {
        severity,
        check,
        model: model.unwrap_or_default(),
        version: String::new(),
        file,
        message,
        fix: fix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn usage_errors_are_refused_and_server_flags_pass_through() {
        assert!(args(&[]).is_err());
        assert!(args(&["a", "b"]).is_err());
        assert!(args(&["a", "--format", "xml"]).is_err());
        let a = args(&[
            "--backend-config",
            "python,user=0",
            "repo",
            "--format=json",
            "--strict",
            "--backend-directory=/x",
        ])
        .unwrap();
        assert_eq!((a.repository.as_str(), a.json, a.strict), ("repo", true, true));
        assert_eq!(a.server, ["--backend-config", "python,user=0", "--backend-directory=/x"]);
        assert!(args(&["repo", "--backend-directory"]).is_err(), "a flag without its value");
    }
}
