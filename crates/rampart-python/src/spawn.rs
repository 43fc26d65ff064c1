//! Starting a worker process: the interpreter with Rampart's runtime, its socket as fd 3, an environment that
//! carries none of the server's, and the sandbox `sandbox.rs` prepared. What runs between `fork` and `exec`
//! is here, and only async-signal-safe system calls run there.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The kernel objects and values the child applies, in the order `spawn.rs` applies them.
pub(crate) struct Prepared {
    /// `(resource, limit)` pairs for setrlimit.
    pub limits: Vec<(u32, u64)>,
    pub new_netns: bool,
    pub user: Option<(u32, u32)>,
    /// A Landlock ruleset to restrict the worker to.
    pub landlock: Option<OwnedFd>,
    /// A seccomp program (BPF instructions).
    pub seccomp: Option<Vec<libc::sock_filter>>,
    /// The layers in force, as the worker reports them (`RAMPART_SANDBOX`).
    pub layers: Vec<String>,
}

/// The fds the worker finds its sockets on: the work socket and the events socket.
const SOCKET_FDS: [i32; 2] = [3, 4];

/// Runs `interpreter` on the runtime in `runtime` (the directory holding `rampart_ipc.py` and
/// `triton_python_backend_utils.py`), with `sockets` (work, events) as fds 3 and 4 and `home` as its home,
/// temporary directory and working directory, inside the sandbox `jail` describes. The environment is
/// rebuilt from nothing: no variable of the server's reaches it.
pub(crate) fn worker(
    interpreter: &Path,
    runtime: &Path,
    home: &Path,
    sockets: [&OwnedFd; 2],
    jail: &Prepared,
) -> std::io::Result<Child> {
    let mut cmd = Command::new(interpreter);
    cmd.arg("-I")
        .arg("-c")
        .arg("import sys; sys.path.insert(0, sys.argv[1]); import rampart_ipc; rampart_ipc.main()")
        .arg(runtime)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("TMPDIR", home)
        .env("LANG", "C.UTF-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("RAMPART_SANDBOX", jail.layers.join(","))
        .current_dir(home)
        .stdin(Stdio::null());
    let fds = [sockets[0].as_raw_fd(), sockets[1].as_raw_fd()];
    let limits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)> =
        jail.limits.iter().map(|&(r, v)| (r as _, v as _)).collect();
    let new_netns = jail.new_netns;
    let user = jail.user;
    let landlock = jail.landlock.as_ref().map(|f| f.as_raw_fd());
    // The program's address and length (a raw pointer could not move into the closure).
    let seccomp = jail.seccomp.as_ref().map(|p| (p.as_ptr() as usize, p.len() as libc::c_ushort));
    // SAFETY: the closure runs in the child between fork and exec. It calls only async-signal-safe system
    // calls (fcntl, dup2, getrlimit, setrlimit, unshare, setgroups, setgid, setuid, prctl, syscall) on
    // values computed before the fork, and allocates nothing: `limits` is read, and the seccomp program
    // and the Landlock ruleset fd belong to `jail`, which outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
            };
            // Move both out of the way first: one of them may sit on the other's target number.
            let mut moved = [0; 2];
            for (slot, &fd) in moved.iter_mut().zip(&fds) {
                *slot = libc::fcntl(fd, libc::F_DUPFD, 10);
                check(*slot)?;
            }
            for (&fd, &target) in moved.iter().zip(&SOCKET_FDS) {
                // dup2 clears close-on-exec on the new fd.
                check(libc::dup2(fd, target))?;
            }
            for &(resource, value) in &limits {
                let mut held = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                check(libc::getrlimit(resource, &mut held))?;
                let v = value.min(held.rlim_max);
                check(libc::setrlimit(resource, &libc::rlimit { rlim_cur: v, rlim_max: v }))?;
            }
            if new_netns {
                let flags = if libc::geteuid() == 0 {
                    libc::CLONE_NEWNET
                } else {
                    libc::CLONE_NEWUSER | libc::CLONE_NEWNET
                };
                check(libc::unshare(flags))?;
            }
            if let Some((uid, gid)) = user {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            if let Some(ruleset) = landlock {
                check(libc::syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) as libc::c_int)?;
            }
            if let Some((filter, len)) = seccomp {
                let prog = libc::sock_fprog { len, filter: filter as *mut libc::sock_filter };
                let p: *const libc::sock_fprog = &prog;
                check(libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, p)
                    as libc::c_int)?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

const SYS_LANDLOCK_RESTRICT_SELF: libc::c_long = 446;

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the kernel's Landlock ABI, 0 when
/// it has none.
pub(crate) fn landlock_version() -> i64 {
    const SYS_LANDLOCK_CREATE_RULESET: libc::c_long = 444;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, the call reads and writes no
    // memory; it only answers a number.
    let v =
        unsafe { libc::syscall(SYS_LANDLOCK_CREATE_RULESET, std::ptr::null::<u8>(), 0usize, 1u32) };
    v.max(0)
}

/// Runs `interpreter -I -c <code>` as `user` (when set) with an empty environment and answers its output:
/// the engine's start-up check that the interpreter works for the user workers run as.
pub(crate) fn probe(
    interpreter: &Path,
    code: &str,
    user: Option<(u32, u32)>,
) -> std::io::Result<std::process::Output> {
    let mut cmd = Command::new(interpreter);
    cmd.args(["-I", "-c", code])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = user {
        // SAFETY: runs in the child between fork and exec and makes only the async-signal-safe
        // setgroups/setgid/setuid calls on plain integers.
        unsafe {
            cmd.pre_exec(move || {
                for r in
                    [libc::setgroups(0, std::ptr::null()), libc::setgid(gid), libc::setuid(uid)]
                {
                    if r < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    cmd.output()
}
