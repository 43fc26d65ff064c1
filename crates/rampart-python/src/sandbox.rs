//! What a worker may do, and the kernel objects that enforce it, prepared in the server before the worker
//! is started (the child only makes system calls with them; see `spawn.rs`).
//!
//! Layers, each applied where the kernel offers it:
//! - **network**: a new network namespace (no interface but a loopback that is down), a seccomp filter that
//!   refuses every socket but `AF_UNIX` (and `io_uring`, which could open one), and Landlock's TCP rules
//!   (ABI 4) that refuse every TCP bind and connect;
//! - **files**: Landlock: read and execute the model directory, the runtime, the interpreter's installation
//!   and the system libraries; write only the worker's private temporary directory;
//! - **resources**: address space, open files, processes and (when set) CPU time, from model parameters;
//! - **identity**: a server running as root starts workers as an unprivileged user (65534 by default);
//! - **environment**: rebuilt from nothing (`spawn.rs`).
//!
//! A model opts out of the network layers with `rampart_sandbox_network: "allow"` and changes a limit with
//! its parameter (`rampart_memory_limit_mb`, `rampart_open_files_limit`, `rampart_processes_limit`,
//! `rampart_cpu_limit_secs`); the load logs a warning naming what it relaxed.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rampart_types::{Error, InstanceSpec, Result};

pub(crate) use crate::spawn::Prepared;

/// What a model's parameters allow its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub network: bool,
    /// Address space in MiB (0: unlimited).
    pub memory_mb: u64,
    pub open_files: u64,
    /// Processes and threads of the worker's user (0: unlimited).
    pub processes: u64,
    /// CPU seconds over the worker's life (0: unlimited; a request's time is bounded by the execute timeout).
    pub cpu_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { network: false, memory_mb: 8192, open_files: 1024, processes: 512, cpu_secs: 0 }
    }
}

impl Policy {
    /// The policy of a model from its config parameters; warns about what it relaxes.
    pub(crate) fn of(spec: &InstanceSpec) -> Result<Policy> {
        let p = Policy::from_parameters(&spec.model_name, &spec.parameters)?;
        let relaxed = p.relaxed();
        if !relaxed.is_empty() {
            tracing::warn!(
                "python model '{}' relaxes its sandbox: {}",
                spec.model_name,
                relaxed.join(", ")
            );
        }
        Ok(p)
    }

    /// The policy the parameters of model `name` ask for.
    pub(crate) fn from_parameters(
        name: &str,
        parameters: &std::collections::HashMap<String, String>,
    ) -> Result<Policy> {
        let mut p = Policy::default();
        let get = |k: &str| parameters.get(k).map(|v| v.trim().to_string());
        let bad = |k: &str, v: &str, want: &str| {
            Error::invalid_arg(format!("model '{name}': parameter '{k}' must be {want}, got '{v}'"))
        };
        if let Some(v) = get("rampart_sandbox_network") {
            p.network = match v.as_str() {
                "allow" => true,
                "deny" => false,
                _ => return Err(bad("rampart_sandbox_network", &v, "'allow' or 'deny'")),
            };
        }
        let number = |k: &str, slot: &mut u64, max: u64| -> Result<()> {
            if let Some(v) = get(k) {
                *slot = v.parse().ok().filter(|&n| n <= max).ok_or_else(|| {
                    bad(k, &v, &format!("a whole number up to {max} (0: unlimited)"))
                })?;
            }
            Ok(())
        };
        number("rampart_memory_limit_mb", &mut p.memory_mb, 1 << 30)?;
        number("rampart_open_files_limit", &mut p.open_files, 1 << 20)?;
        number("rampart_processes_limit", &mut p.processes, 1 << 22)?;
        number("rampart_cpu_limit_secs", &mut p.cpu_secs, 1 << 40)?;
        if p.open_files == 0 {
            return Err(bad("rampart_open_files_limit", "0", "at least 1"));
        }
        Ok(p)
    }

    /// What this policy allows beyond the defaults, for the load's warning and the startup report.
    pub(crate) fn relaxed(&self) -> Vec<String> {
        let d = Policy::default();
        let mut out = Vec::new();
        if self.network {
            out.push("network access (rampart_sandbox_network=allow)".to_string());
        }
        let more = |v: u64, def: u64| v == 0 || (def != 0 && v > def);
        if more(self.memory_mb, d.memory_mb) {
            out.push(format!("address space {} MiB", self.memory_mb));
        }
        if self.open_files > d.open_files {
            out.push(format!("{} open files", self.open_files));
        }
        if more(self.processes, d.processes) {
            out.push(format!("{} processes", self.processes));
        }
        out
    }
}

/// Whether a new network namespace could be created (cleared the first time it fails).
static NETNS: AtomicBool = AtomicBool::new(true);

/// Records that the kernel refused a network namespace: later workers rely on the other network layers.
pub(crate) fn netns_unavailable() {
    if NETNS.swap(false, Ordering::Relaxed) {
        tracing::warn!(
            "python workers: the kernel refused a new network namespace; the seccomp and Landlock network \
             layers still apply"
        );
    }
}

/// Prepares the sandbox of one worker whose private directory is `home`.
pub(crate) fn prepare(
    policy: &Policy,
    user: Option<(u32, u32)>,
    readable: &[PathBuf],
    home: &Path,
) -> Result<Prepared> {
    let mut layers = vec!["environment".to_string()];
    let mut limits = vec![(libc::RLIMIT_CORE, 0), (libc::RLIMIT_NOFILE, policy.open_files)];
    for (resource, value) in [
        (libc::RLIMIT_AS, policy.memory_mb.saturating_mul(1 << 20)),
        (libc::RLIMIT_NPROC, policy.processes),
        (libc::RLIMIT_CPU, policy.cpu_secs),
    ] {
        if value > 0 {
            limits.push((resource, value));
        }
    }
    layers.push("rlimits".into());
    let new_netns = !policy.network && NETNS.load(Ordering::Relaxed);
    if new_netns {
        layers.push("netns".into());
    }
    let seccomp = if policy.network { None } else { Some(socket_filter()?) };
    if seccomp.is_some() {
        layers.push("seccomp".into());
    }
    let (landlock, landlock_layers) = landlock_ruleset(policy, readable, home)?;
    layers.extend(landlock_layers);
    if let Some((uid, _)) = user {
        layers.push(format!("user:{uid}"));
    }
    Ok(Prepared { limits, new_netns, user, landlock, seccomp, layers })
}

/// Refuses `socket()` for every family but `AF_UNIX`, and `io_uring_setup`, with EACCES.
fn socket_filter() -> Result<Vec<libc::sock_filter>> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let fail = |e: &dyn std::fmt::Display| Error::internal(format!("seccomp filter: {e}"));
    let not_unix =
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, libc::AF_UNIX as u64)
            .map_err(|e| fail(&e))?;
    let mut rules = BTreeMap::new();
    rules.insert(libc::SYS_socket, vec![SeccompRule::new(vec![not_unix]).map_err(|e| fail(&e))?]);
    rules.insert(libc::SYS_io_uring_setup, vec![]);
    let arch = std::env::consts::ARCH.try_into().map_err(|e| fail(&e))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        arch,
    )
    .map_err(|e| fail(&e))?;
    let program: seccompiler::BpfProgram = filter.try_into().map_err(|e| fail(&e))?;
    let insn = |i: &seccompiler::sock_filter| libc::sock_filter {
        code: i.code,
        jt: i.jt,
        jf: i.jf,
        k: i.k,
    };
    Ok(program.iter().map(insn).collect())
}

/// System paths every worker reads: libraries, the loader cache, CPU topology (numpy's thread pools).
const SYSTEM_READ: [&str; 11] = [
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/null",
    "/dev/urandom",
    "/sys/devices/system/cpu",
    "/proc/cpuinfo",
    "/proc/meminfo",
];

/// What a model that opts into the network also reads: name resolution and certificate stores.
const NETWORK_READ: [&str; 6] = [
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
];

/// A Landlock ruleset (best effort for the running kernel) and the layers it enforces.
fn landlock_ruleset(
    policy: &Policy,
    readable: &[PathBuf],
    home: &Path,
) -> Result<(Option<OwnedFd>, Vec<String>)> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
        path_beneath_rules,
    };
    let fail = |e: &dyn std::fmt::Display| Error::internal(format!("landlock ruleset: {e}"));
    let abi = ABI::V5;
    let mut ruleset =
        Ruleset::default().handle_access(AccessFs::from_all(abi)).map_err(|e| fail(&e))?;
    if !policy.network {
        ruleset = ruleset.handle_access(AccessNet::from_all(abi)).map_err(|e| fail(&e))?;
    }
    let system = SYSTEM_READ.iter().map(PathBuf::from);
    // A model allowed the network also reads what name resolution and TLS need.
    let network = NETWORK_READ.iter().filter(|_| policy.network).map(PathBuf::from);
    let read: Vec<PathBuf> =
        system.chain(network).chain(readable.iter().cloned()).filter(|p| p.exists()).collect();
    let created = ruleset
        .create()
        .map_err(|e| fail(&e))?
        .add_rules(path_beneath_rules(&read, AccessFs::from_read(abi)))
        .map_err(|e| fail(&e))?
        .add_rules(path_beneath_rules(["/dev/null"], AccessFs::WriteFile))
        .map_err(|e| fail(&e))?
        .add_rules(path_beneath_rules([home], AccessFs::from_all(abi)))
        .map_err(|e| fail(&e))?;
    let fd: Option<OwnedFd> = created.into();
    let mut layers = Vec::new();
    if fd.is_some() {
        layers.push("landlock-fs".to_string());
        if !policy.network && crate::spawn::landlock_version() >= 4 {
            layers.push("landlock-net".to_string());
        }
    }
    Ok((fd, layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(params: &[(&str, &str)]) -> InstanceSpec {
        InstanceSpec {
            model_name: "m".into(),
            parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_deny_the_network_and_bound_resources() {
        let p = Policy::of(&spec(&[])).unwrap();
        assert_eq!(p, Policy::default());
        assert!(!p.network && p.memory_mb == 8192 && p.open_files == 1024);
        assert!(p.relaxed().is_empty());
    }

    #[test]
    fn parameters_relax_and_bad_values_are_named() {
        let p = Policy::of(&spec(&[
            ("rampart_sandbox_network", "allow"),
            ("rampart_memory_limit_mb", "0"),
        ]))
        .unwrap();
        assert!(p.network && p.memory_mb == 0);
        assert_eq!(p.relaxed().len(), 2);
        for (k, v) in [
            ("rampart_sandbox_network", "maybe"),
            ("rampart_memory_limit_mb", "lots"),
            ("rampart_open_files_limit", "0"),
        ] {
            let e = Policy::of(&spec(&[(k, v)])).unwrap_err();
            assert!(e.message().contains(k), "{}", e.message());
        }
    }

    #[test]
    fn a_network_policy_has_no_socket_filter() {
        let home = tempfile::tempdir().unwrap();
        let open = Policy { network: true, ..Policy::default() };
        let prepared = prepare(&open, None, &[], home.path()).unwrap();
        assert!(prepared.seccomp.is_none() && !prepared.new_netns);
        let closed = prepare(&Policy::default(), None, &[], home.path()).unwrap();
        assert!(closed.seccomp.as_ref().is_some_and(|p| !p.is_empty()));
        assert!(closed.layers.contains(&"seccomp".to_string()));
    }
}
