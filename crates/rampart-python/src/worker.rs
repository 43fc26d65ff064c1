//! One worker process and the thread that reads its events.
//!
//! Two socket pairs join the server and a worker. The *work* socket carries load, execute and finalize to
//! the worker and its answers back; the instance thread writes and reads it itself, so a request crosses no
//! extra thread. The *events* socket carries what may come at any time: the worker's log lines, its calls
//! to other models (BLS), model control and metrics; a reader thread serves them (so a model that logs or
//! calls while the instance is idle never blocks) and answers cancellations' counterparts on it. The end
//! of the work socket is the end of the process.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use rampart_types::{Error, Result};
use serde_json::{Value, json};
use std::os::fd::AsFd;

use crate::bls::Calls;
use crate::ipc::{self, Message};
use crate::pending::Pending;
use crate::sandbox::{self, Policy};
use crate::spawn;

/// What starts workers: the interpreter, the runtime directory, the user workers run as, and what every
/// worker may read (the runtime and the interpreter's installation).
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub interpreter: PathBuf,
    pub runtime: PathBuf,
    pub user: Option<(u32, u32)>,
    pub readable: Vec<PathBuf>,
    /// `--backend-config=python,allow-model-control=true`.
    pub control_allowed: bool,
}

/// What the instance thread waits for.
pub(crate) enum Next {
    Message(Message),
    /// The worker is gone; why, as far as the server can tell.
    Closed(String),
    TimedOut,
}

pub(crate) struct Worker {
    child: Child,
    /// The work socket (see the module documentation).
    sock: OwnedFd,
    /// The requests the worker holds (answered from both sockets).
    pub pending: Arc<Pending>,
    /// The events socket (its reader thread holds it too).
    pub events: Arc<OwnedFd>,
    /// How the process ended, in words, once this side reaped it (the reader thread, which can no longer
    /// ask the kernel then, reads it here).
    status: Arc<std::sync::OnceLock<String>>,
    /// The model defines `is_ready()` (said by the worker when it is ready).
    pub has_is_ready: bool,
    /// The worker's home and temporary directory, removed with it.
    _home: tempfile::TempDir,
    /// "python model 'm' (instance i)".
    pub label: String,
}

impl Worker {
    /// Starts a worker and sends it `load`; answers the worker's first reply (`ready`, `config`, …) or the
    /// reason it did not give one within `timeout`.
    pub(crate) fn start(
        setup: &Setup,
        label: String,
        load: &Value,
        timeout: Duration,
        policy: &Policy,
        model_dir: &Path,
        calls: Calls,
    ) -> Result<(Worker, Value)> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::unavailable(format!("{label}: {what}: {e}"))
        };
        let pair = || {
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
                .map_err(|e| fail("socketpair", &e))
        };
        let (ours, theirs) = pair()?;
        let (events, their_events) = pair()?;
        let home = tempfile::Builder::new()
            .prefix("rampart-python-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| fail("creating its temporary directory", &e))?;
        if let Some((uid, gid)) = setup.user {
            std::os::unix::fs::chown(home.path(), Some(uid), Some(gid))
                .map_err(|e| fail("handing its temporary directory to the worker's user", &e))?;
        }
        let mut readable = setup.readable.clone();
        readable.push(model_dir.to_path_buf());
        let mut jail = sandbox::prepare(policy, setup.user, &readable, home.path())?;
        let sockets = [&theirs, &their_events];
        let mut spawned =
            spawn::worker(&setup.interpreter, &setup.runtime, home.path(), sockets, &jail);
        if spawned.is_err() && jail.new_netns {
            // Kernels that refuse network namespaces to this process: the other layers remain.
            sandbox::netns_unavailable();
            jail = sandbox::prepare(policy, setup.user, &readable, home.path())?;
            spawned =
                spawn::worker(&setup.interpreter, &setup.runtime, home.path(), sockets, &jail);
        }
        let child =
            spawned.map_err(|e| fail(&format!("starting {}", setup.interpreter.display()), &e))?;
        drop(jail);
        drop((theirs, their_events));
        // The reader thread owns the events socket.
        let reader = Arc::new(events);
        let events = reader.clone();
        let pending = Pending::new(label.clone());
        let held = pending.clone();
        let pid = child.id();
        let status = Arc::new(std::sync::OnceLock::new());
        let seen = status.clone();
        std::thread::Builder::new()
            .name("rampart-python-events".into())
            .spawn(move || read_events(&reader, &calls, &held, Exit { pid, status: seen }))
            .map_err(|e| fail("starting its reader thread", &e))?;
        let mut worker = Worker {
            child,
            sock: ours,
            pending,
            events,
            has_is_ready: false,
            _home: home,
            label,
            status,
        };
        worker.send(load, &[])?;
        match worker.next(timeout) {
            Next::Message(m) => Ok((worker, m.header)),
            Next::Closed(why) => Err(Error::unavailable(format!(
                "{}: the worker process ended before it was ready ({why})",
                worker.label
            ))),
            Next::TimedOut => {
                worker.kill();
                Err(Error::unavailable(format!(
                    "{}: the worker did not finish loading within {} s",
                    worker.label,
                    timeout.as_secs_f64()
                )))
            }
        }
    }

    /// Sends on the work socket.
    pub(crate) fn send(&self, header: &Value, parts: &[&[u8]]) -> Result<()> {
        ipc::send(&self.sock, header, parts)
    }

    /// The next message on the work socket, waiting at most `timeout`.
    pub(crate) fn next(&mut self, timeout: Duration) -> Next {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
            Ok(0) => return Next::TimedOut,
            Err(nix::errno::Errno::EINTR) => return Next::TimedOut,
            Err(e) => return Next::Closed(self.ended(Some(format!("poll: {e}")))),
            Ok(_) => {}
        }
        match ipc::receive(&self.sock) {
            Ok(Some(m)) => Next::Message(m),
            Ok(None) => Next::Closed(self.ended(None)),
            Err(e) => Next::Closed(self.ended(Some(e.message().to_string()))),
        }
    }

    /// How the process ended, if it has.
    pub(crate) fn exited(&mut self) -> Option<String> {
        let text = self.child.try_wait().ok().flatten().map(describe)?;
        Some(self.status.get_or_init(|| text).clone())
    }

    /// How the process ended (it has closed its socket, so it is exiting or gone).
    fn ended(&mut self, reason: Option<String>) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break None,
            }
        };
        let status = match status {
            Some(s) => self.status.get_or_init(|| describe(s)).clone(),
            None => {
                self.kill();
                "it closed its channel and was killed".into()
            }
        };
        match reason {
            Some(r) => format!("{status}; {r}"),
            None => status,
        }
    }

    /// Asks the worker to run `finalize()` and waits for it at most `timeout`; then the process ends.
    pub(crate) fn finalize(mut self, timeout: Duration) {
        if self.send(&serde_json::json!({"op": "finalize"}), &[]).is_ok() {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.next(left) {
                    Next::Message(m) if m.header["op"] == "finalized" => break,
                    Next::Message(_) => continue,
                    Next::Closed(_) => break,
                    Next::TimedOut => {
                        tracing::warn!(
                            "{}: finalize() did not return within {} s; the worker is killed",
                            self.label,
                            timeout.as_secs_f64()
                        );
                        break;
                    }
                }
            }
        }
        self.kill();
    }

    /// Ends the process now (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        if let Ok(s) = self.child.wait() {
            self.status.get_or_init(|| describe(s));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An exit status in words.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => exited(code),
        (None, Some(sig)) => killed(sig),
        _ => format!("it ended: {status}"),
    }
}

fn exited(code: i32) -> String {
    format!("it exited with status {code}")
}

fn killed(sig: i32) -> String {
    format!("it was killed by signal {sig} ({})", signal_name(sig))
}

/// The worker process, as the reader thread knows it.
struct Exit {
    pid: u32,
    /// [`Worker::status`].
    status: Arc<std::sync::OnceLock<String>>,
}

/// How the worker ended, seen from the reader thread once the worker closed its channel: waits at most 2 s
/// for it to exit, and leaves it to be reaped by its owner (or reads what the owner saw when it reaped it).
fn exit_of(exit: &Exit) -> String {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match waitid(Id::Pid(nix::unistd::Pid::from_raw(exit.pid as i32)), flags) {
            Ok(WaitStatus::Exited(_, code)) => return exited(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return killed(sig as i32),
            // Already reaped by the instance thread, which records what it saw.
            Err(_) if exit.status.get().is_some() => break,
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    exit.status.get().cloned().unwrap_or_else(|| "it closed its channel".into())
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGXCPU => "SIGXCPU",
        _ => "signal",
    }
}

/// How often the reader looks for requests whose callers went away.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Serves the events socket until the worker closes it: responses sent by the model's response senders,
/// log lines, model calls and control; tells the worker which requests were cancelled.
fn read_events(sock: &Arc<OwnedFd>, calls: &Calls, pending: &Pending, exit: Exit) {
    let ended = |why: Option<String>| {
        let why = match why {
            Some(w) => format!("{}; {w}", exit_of(&exit)),
            None => exit_of(&exit),
        };
        pending.fail_all(&Error::unavailable(format!(
            "{}: its worker process ended ({why}); the worker is being restarted",
            calls.label
        )));
    };
    loop {
        for (exec, request) in pending.cancelled() {
            let _ =
                ipc::send(sock, &json!({"op": "cancel", "exec": exec, "request": request}), &[]);
        }
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        let timeout =
            PollTimeout::try_from(CANCEL_POLL.as_millis() as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return ended(Some(format!("poll: {e}"))),
            Ok(_) => {}
        }
        match ipc::receive(sock) {
            Ok(Some(m)) => match m.header["op"].as_str() {
                Some("response") => {
                    pending.offer(m.header["exec"].as_u64().unwrap_or(0), &m.header, &m.data)
                }
                Some("log") => log(&calls.label, &m.header),
                Some("bls") => calls.dispatch(sock, &m),
                Some("bls_cancel") => calls.cancel(&m),
                Some("ready_answer") => calls.readiness.answered(m.header["ready"] == true),
                Some("is_cancelled") => {
                    // Asked by `request.is_cancelled()`: answered now, as Triton's stub asks its parent.
                    let key = (m.header["exec"].as_u64(), m.header["request"].as_u64());
                    let result = match key {
                        (Some(exec), Some(request)) => pending.is_cancelled((exec, request)),
                        _ => false,
                    };
                    let answer = json!({"op": "control_response", "call": m.header["call"], "result": result});
                    let _ = ipc::send(sock, &answer, &[]);
                }
                Some("control") => calls.control(sock, &m),
                _ => tracing::debug!("{}: unexpected event {}", calls.label, m.header["op"]),
            },
            Ok(None) => return ended(None),
            Err(e) => {
                tracing::warn!("{}: events channel: {}", calls.label, e.message());
                return ended(Some(e.message().to_string()));
            }
        }
    }
}

/// A line the model wrote through `pb_utils.Logger`.
fn log(label: &str, header: &Value) {
    let message = header["message"].as_str().unwrap_or_default();
    match header["level"].as_str() {
        Some("error") => tracing::error!("{label}: {message}"),
        Some("warn") => tracing::warn!("{label}: {message}"),
        Some("info") => tracing::info!("{label}: {message}"),
        _ => tracing::debug!("{label}: {message}"),
    }
}

/// `dir` as a string for the worker (paths it cannot read are refused early).
pub(crate) fn path_str(dir: &Path) -> Result<&str> {
    dir.to_str().ok_or_else(|| {
        Error::invalid_arg(format!("python models need UTF-8 paths, got '{}'", dir.display()))
    })
}
