"""The Python backend's sandbox (crates/rampart-python/src/sandbox.rs, spawn.rs), each layer shown from inside a real
model.py: `sandbox_probe` (tests/python/python_models/sandbox_probe) takes an action name and answers how it went
("ok …" or "<Exception>: …"). The forbidden action fails by default and succeeds when the model opts in through
its config parameter; copies of the probe under other names carry those parameters:

- network: a new network namespace, a seccomp filter refusing every socket but AF_UNIX, Landlock's TCP rules
  (ABI 4); `rampart_sandbox_network: "allow"` lifts all three;
- files (Landlock): read the model directory and the system libraries, write only the worker's private $HOME;
- resources: address space 8 GiB (`rampart_memory_limit_mb`), 1024 open files (`rampart_open_files_limit`);
- identity: a server running as root runs its workers as uid 65534;
- RAMPART_SANDBOX in the worker's environment names the layers in force. The test works out independently what
  THIS kernel offers (a network namespace, the Landlock ABI) and says so (a pytest warning) when a layer is
  missing there, checking the others all the same.

Evidence from outside the worker backs the answers from inside: /proc/<worker>/status (Seccomp, NoNewPrivs),
/proc/<worker>/limits, /proc/<worker>/ns/net against the server's.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import pytest

from conftest import base_args, finish_server, start_server, wait_models_settled
from test_python_backend import (  # noqa: F401 - worker_python, worker_uid and module_public_dir are fixtures
    FIXTURES,
    copy_repo,
    json_infer,
    module_public_dir,
    worker_python,
    worker_uid,
)

GIB = 1 << 30
# Copies of sandbox_probe and the parameters they add to its config.
VARIANTS = {
    "sandbox_probe_net": {"rampart_sandbox_network": "allow"},
    "sandbox_probe_mem": {"rampart_memory_limit_mb": "20000"},
    "sandbox_probe_files": {"rampart_open_files_limit": "64"},
    "sandbox_bad_network": {"rampart_sandbox_network": "maybe"},
    "sandbox_bad_memory": {"rampart_memory_limit_mb": "lots"},
}
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SYS_LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
LANDLOCK_CREATE_RULESET_VERSION = 1


# ---------------------------------------------------------------------------------------
# What this kernel offers, found out independently of the server
# ---------------------------------------------------------------------------------------


def landlock_abi() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    v = libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(int(v), 0)


def netns_possible() -> bool:
    """Whether a process like the server may create a network namespace (as root: CLONE_NEWNET; otherwise inside a
    new user namespace), tried in a child so this process keeps its own."""
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    code = f"import ctypes, sys; sys.exit(0 if ctypes.CDLL(None).unshare({flags}) == 0 else 1)"
    return subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


def can_reserve(nbytes: int) -> bool:
    """Whether this host's overcommit policy lets a process reserve `nbytes` of address space at once."""
    code = f"import numpy; numpy.empty({nbytes}, numpy.uint8)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


def missing(what: str) -> None:
    """A layer this kernel does not offer: said in the test's output and in pytest's warnings summary."""
    message = f"sandbox layer not checked on this kernel: {what}"
    print(message)
    warnings.warn(message, pytest.PytestWarning)


@pytest.fixture(scope="module")
def kernel() -> dict:
    found = {"netns": netns_possible(), "landlock_abi": landlock_abi()}
    print(f"kernel {os.uname().release}: {found}")
    return found


def expected_layers(kernel: dict, uid: int, network: bool) -> set[str]:
    layers = {"environment", "rlimits"}
    if not network:
        layers.add("seccomp")
        if kernel["netns"]:
            layers.add("netns")
        else:
            missing("netns (the kernel refuses a new network namespace)")
    if kernel["landlock_abi"] >= 1:
        layers.add("landlock-fs")
        if not network:
            if kernel["landlock_abi"] >= 4:
                layers.add("landlock-net")
            else:
                missing(f"landlock-net (Landlock ABI {kernel['landlock_abi']} < 4)")
    else:
        missing("landlock-fs and landlock-net (no Landlock)")
    if os.geteuid() == 0:
        if uid != 0:
            layers.add(f"user:{uid}")
        else:
            missing("user (no interpreter with numpy runs as uid 65534; the workers keep root)")
    return layers


# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------


def variant(repo: Path, name: str, parameters: dict[str, str]) -> None:
    """A copy of sandbox_probe named `name` whose config adds `parameters`."""
    shutil.copytree(FIXTURES / "sandbox_probe", repo / name)
    config = (repo / name / "config.pbtxt").read_text().replace('name: "sandbox_probe"', f'name: "{name}"')
    for key, value in parameters.items():
        config += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    (repo / name / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def srv(module_public_dir, worker_python):  # noqa: F811
    repo = copy_repo(module_public_dir / "repo", ["sandbox_probe"])
    for name, parameters in VARIANTS.items():
        variant(repo, name, parameters)
    for path in repo.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    python, extra = worker_python
    args = base_args(repo, extra=["--exit-on-error=false", f"--backend-config=python,interpreter={python}", *extra])
    server = start_server(args, "rampart-python-sandbox", wait="live")
    wait_models_settled(server)
    yield server
    finish_server(server)


def probe(srv, model: str, action: str) -> str:
    r = srv.infer(model, json_infer("BYTES", [1], [action], name="ACTION"))
    assert r.status_code == 200, f"{model} {action}: {r.status_code} {r.text}"
    (result,) = r.json()["outputs"][0]["data"]
    return result


def ok(srv, model: str, action: str) -> str:
    """The detail of an action that must succeed."""
    result = probe(srv, model, action)
    assert result == "ok" or result.startswith("ok "), f"{model}: {action} failed: {result}"
    return result[3:]


def refused(srv, model: str, action: str, error: str = "PermissionError") -> str:
    result = probe(srv, model, action)
    assert result.startswith(f"{error}: "), f"{model}: {action} was not refused with {error}: {result}"
    return result


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def proc_limit(pid: int, name: str) -> str:
    """The soft limit `name` ("Max address space", "Max open files") of a process."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith(name):
            return line[len(name):].split()[0]
    raise AssertionError(f"no '{name}' in /proc/{pid}/limits")


def worker_pid(srv, model: str) -> int:
    return int(ok(srv, model, "pid"))


# ---------------------------------------------------------------------------------------
# Layers in force
# ---------------------------------------------------------------------------------------


def test_rampart_sandbox_names_the_layers_this_kernel_enforces(srv, kernel, worker_uid):  # noqa: F811
    for model, network in (("sandbox_probe", False), ("sandbox_probe_net", True)):
        layers = set(ok(srv, model, "env:RAMPART_SANDBOX").split(","))
        assert layers == expected_layers(kernel, worker_uid, network), model
    for model in ("sandbox_probe_mem", "sandbox_probe_files"):
        assert set(ok(srv, model, "env:RAMPART_SANDBOX").split(",")) == expected_layers(kernel, worker_uid, False)


def test_the_worker_runs_with_no_new_privileges(srv):
    for model in ("sandbox_probe", "sandbox_probe_net"):
        assert proc_status(worker_pid(srv, model))["NoNewPrivs"] == "1", model


# ---------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------


def test_network_is_refused_by_default_but_unix_sockets_work(srv, kernel):
    refused(srv, "sandbox_probe", "socket_inet")
    refused(srv, "sandbox_probe", f"http_get:{srv.port}")
    assert ok(srv, "sandbox_probe", "socket_unix") == "ping"
    pid = worker_pid(srv, "sandbox_probe")
    assert proc_status(pid)["Seccomp"] == "2", "a seccomp filter is installed"
    server_ns = os.readlink(f"/proc/{srv.proc.pid}/ns/net")
    worker_ns = ok(srv, "sandbox_probe", "netns")
    assert worker_ns == os.readlink(f"/proc/{pid}/ns/net")
    if kernel["netns"]:
        assert worker_ns != server_ns, "the worker shares the server's network namespace"
    else:
        missing("netns (the worker shares the server's network namespace)")


def test_network_allow_lets_the_model_reach_the_server_port(srv):
    assert ok(srv, "sandbox_probe_net", "socket_inet") == ""
    assert ok(srv, "sandbox_probe_net", f"http_get:{srv.port}").endswith(" 200 OK"), "/v2/health/live answered"
    # Name resolution works too: the opt-in also lets the worker read /etc/hosts and friends.
    assert ok(srv, "sandbox_probe_net", f"http_get_localhost:{srv.port}").endswith(" 200 OK")
    assert ok(srv, "sandbox_probe_net", "socket_unix") == "ping"
    pid = worker_pid(srv, "sandbox_probe_net")
    assert proc_status(pid)["Seccomp"] == "0", "no seccomp filter for a model that allows the network"
    assert ok(srv, "sandbox_probe_net", "netns") == os.readlink(f"/proc/{srv.proc.pid}/ns/net")


# ---------------------------------------------------------------------------------------
# Files (Landlock)
# ---------------------------------------------------------------------------------------


def readable_by_all() -> Path:
    """A file outside what workers may read that plain file permissions would let anyone read."""
    for candidate in ("/etc/hostname", "/etc/passwd", "/etc/hosts"):
        path = Path(candidate)
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & stat.S_IROTH:
            return path
    pytest.fail("no world-readable file among /etc/hostname, /etc/passwd, /etc/hosts")


def test_files_outside_the_model_and_home_are_refused(srv, kernel):
    secret = readable_by_all()
    tmp = Path("/tmp")
    assert tmp.stat().st_mode & stat.S_IWOTH, "/tmp is writable for every user: only Landlock can refuse it"
    target = tmp / f"rampart-sandbox-probe-{uuid.uuid4().hex}"
    if kernel["landlock_abi"] < 1:
        missing(f"landlock-fs (reading {secret} and writing {target} are not refused)")
        return
    for model in ("sandbox_probe", "sandbox_probe_net"):
        refused(srv, model, f"read:{secret}")
        refused(srv, model, f"write:{target}")
        assert not target.exists(), f"{model} created {target}"


def test_the_model_reads_its_directory_and_writes_its_private_home(srv, worker_uid):  # noqa: F811
    for model in ("sandbox_probe", "sandbox_probe_net"):
        size, listing = ok(srv, model, "read_model_dir").split(" ", 1)
        assert int(size) > 0 and "model.py" in listing, (model, listing)
        written = Path(ok(srv, model, "write_home"))
        home = Path(ok(srv, model, "env:HOME"))
        assert written.parent == home and home.name.startswith("rampart-python-"), (written, home)
        assert written.read_text() == "home"
        st = home.stat()
        assert st.st_uid == worker_uid, f"{home} belongs to uid {st.st_uid}"
        assert stat.S_IMODE(st.st_mode) == 0o700, f"{home} has mode {oct(st.st_mode)}"


# ---------------------------------------------------------------------------------------
# Resources
# ---------------------------------------------------------------------------------------


def test_address_space_is_8_gib_unless_the_model_raises_it(srv):
    result = refused(srv, "sandbox_probe", f"ones:{10 * GIB}", "MemoryError")
    assert "10.0 GiB" in result, result
    refused(srv, "sandbox_probe", f"empty:{10 * GIB}", "MemoryError")  # address space, not pages touched
    assert proc_limit(worker_pid(srv, "sandbox_probe"), "Max address space") == str(8192 << 20)
    assert proc_limit(worker_pid(srv, "sandbox_probe_mem"), "Max address space") == str(20000 << 20)
    if can_reserve(10 * GIB):
        assert ok(srv, "sandbox_probe_mem", f"empty:{10 * GIB}") == str(10 * GIB)
    else:
        missing("raised address space (this host's overcommit policy refuses a 10 GiB reservation outright)")
    assert ok(srv, "sandbox_probe", f"ones:{64 << 20}") == str(64 << 20), "ordinary allocations still work"


def test_open_files_limit(srv):
    assert ok(srv, "sandbox_probe", "open_files:100") == "100"
    assert proc_limit(worker_pid(srv, "sandbox_probe"), "Max open files") == "1024"
    refused(srv, "sandbox_probe_files", "open_files:100", "OSError")
    assert "Too many open files" in probe(srv, "sandbox_probe_files", "open_files:100")
    assert proc_limit(worker_pid(srv, "sandbox_probe_files"), "Max open files") == "64"
    assert ok(srv, "sandbox_probe_files", "open_files:10") == "10"


# ---------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------


def test_workers_of_a_root_server_run_as_nobody(srv, worker_uid):  # noqa: F811
    if os.geteuid() != 0:
        missing("identity (the server does not run as root: workers keep its user)")
    elif worker_uid == 0:
        missing("identity (no interpreter with numpy runs as uid 65534; the workers keep root)")
    else:
        assert worker_uid == 65534
    for model in ("sandbox_probe", "sandbox_probe_net"):
        assert ok(srv, model, "uid") == str(worker_uid), model
        status = proc_status(worker_pid(srv, model))
        assert status["Uid"].split() == [str(worker_uid)] * 4, status["Uid"]
        assert status["Groups"].strip() == "", "supplementary groups were dropped"


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, reason",
    [
        ("sandbox_bad_network", "parameter 'rampart_sandbox_network' must be 'allow' or 'deny', got 'maybe'"),
        ("sandbox_bad_memory", "parameter 'rampart_memory_limit_mb' must be a whole number up to"),
    ],
)
def test_a_bad_sandbox_parameter_fails_the_load_naming_it(srv, model, reason):
    entry = next(e for e in srv.index() if e["name"] == model)
    assert entry["state"] == "UNAVAILABLE", entry
    assert reason in entry["reason"], entry
    assert f"model '{model}'" in entry["reason"], entry
    if model == "sandbox_bad_memory":
        assert "got 'lots'" in entry["reason"], entry


def test_the_log_warns_when_a_model_relaxes_its_sandbox(srv):
    log = srv.stderr_text()
    relaxing = [line for line in log.splitlines() if "relaxes its sandbox" in line]
    assert any(
        "python model 'sandbox_probe_net' relaxes its sandbox" in line and "rampart_sandbox_network=allow" in line
        for line in relaxing
    ), relaxing
    assert any(
        "python model 'sandbox_probe_mem' relaxes its sandbox" in line and "address space 20000 MiB" in line
        for line in relaxing
    ), relaxing
    for strict in ("sandbox_probe", "sandbox_probe_files"):
        assert not any(f"'{strict}' relaxes" in line for line in relaxing), relaxing


def test_the_startup_exposure_report_lists_the_models_that_relax_their_sandbox(srv):
    log = srv.stderr_text()
    [line] = [x for x in log.splitlines() if "python models relaxing their sandbox by model parameter" in x]
    assert "'sandbox_probe_net' (network access (rampart_sandbox_network=allow))" in line, line
    assert "'sandbox_probe_mem' (address space 20000 MiB)" in line, line
    for strict in ("sandbox_probe", "sandbox_probe_files"):
        assert f"'{strict}' (" not in line, line
