#!/usr/bin/env python3
"""Rampart benchmark driver (run it through ``bash bench/run.sh``; see bench/README.md).

Measures, on this machine:

* the in-process engine ceiling (``target/release/engine-ceiling``) on the example MLP, batch 1 and 32;
* Rampart's start-to-ready time and idle / peak RSS;
* a perf_analyzer matrix (HTTP and gRPC x concurrency 1/4/16) over ``simple``, ``identity_fp32``
  (response-cache hits), ``mlp_db`` (dynamic batching), ``mlp`` batch 1 and ``mlp`` batch 32;
* at concurrency 1/16: the ensembles ``ens_mlp`` (identity ``pre`` -> ``mlp`` -> identity ``post``) and
  ``ens1_mlp`` (``mlp`` alone), reported as the overhead they add over calling ``mlp`` directly; at
  1/8/16 the sequence model ``seq`` (sequence batching, direct strategy) in perf_analyzer's sequence mode;
* with ``--vs-triton``, the same for the real Triton 2.51 (``bench/triton_ref.py``), one server at a time;

and writes a markdown report (stdout + ``--out``) and the raw numbers as JSON next to it.

Progress goes to stderr; only the report goes to stdout. Every subprocess is bounded by a timeout, every
server runs in its own process group and is stopped in a ``finally``; a cell that cannot be measured is
reported as ``failed: <reason>`` instead of aborting the run.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import requests  # noqa: E402
import triton_ref  # noqa: E402  (bench/triton_ref.py: Triton install/repo/start/stop + perf_analyzer helpers)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "models"
MLP_ONNX = EXAMPLES / "mlp" / "1" / "model.onnx"
RAMPART_BIN = ROOT / "target" / "release" / "rampart"
CEILING_BIN = ROOT / "target" / "release" / "engine-ceiling"
ORT_DIR = ROOT / "third_party" / "onnxruntime"
PERF_ANALYZER = ROOT / "third_party" / "perf_analyzer" / "perf_analyzer"
CACHE_BYTES = 64 << 20  # --cache-config local,size=67108864 on both servers
# The interpreter of Rampart's Python-backend workers: readable by uid 65534 (the workers' user when the bench runs as
# root), with numpy (scripts/setup.sh installs python3-numpy).
PY_WORKER = os.environ.get("RAMPART_PY_WORKER", "/usr/bin/python3")
MIB = 1024.0  # /proc reports kB (KiB); RSS is reported in MiB

T0 = time.monotonic()


def log(msg: str) -> None:
    el = time.monotonic() - T0
    print(f"[bench {time.strftime('%H:%M:%S')} +{el:6.0f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# the matrix
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    id: str  # --models name
    model: str  # model in the repository
    batch: int
    shapes: tuple = ()  # (("INPUT0", 16),)
    title: str = ""
    concs: tuple = ()  # its concurrencies when --concurrency is not given (empty: CONCURRENCY)
    sequence: bool = False  # a sequence model: perf_analyzer's sequence mode (triton_ref.sequence_args)


CASES = [
    Case("simple", "simple", 1, (), "`simple` (INT32 add/sub [16]), batch 1"),
    Case("identity_fp32", "identity_fp32", 1, (("INPUT0", 16),),
         "`identity_fp32` [16], batch 1, response-cache hits (`--input-data zero`)"),
    Case("mlp_db", "mlp_db", 1, (), "`mlp_db` (MLP 784→256→10, dynamic batching), batch 1"),
    Case("mlp_b1", "mlp", 1, (), "`mlp` (no dynamic batching), batch 1"),
    Case("ens1_mlp", "ens1_mlp", 1, (), "`ens1_mlp` one-step ensemble (`mlp` alone), batch 1",
         concs=(1, 16)),
    Case("ens_mlp", "ens_mlp", 1, (),
         "`ens_mlp` ensemble (identity `pre` → `mlp` → identity `post`), batch 1", concs=(1, 16)),
    Case("mlp_b32", "mlp", 32, (), "`mlp` (no dynamic batching), batch 32"),
    Case("seq", "seq", 1, (),
         "`seq` sequence model (OUTPUT = READY·(INPUT+START), INT32 [1], max_batch_size 8, direct), "
         f"sequences of {triton_ref.SEQUENCE_LENGTH} ± {triton_ref.SEQUENCE_LENGTH_VARIATION} % requests",
         concs=(1, 8, 16), sequence=True),
    Case("py_simple", "simple_py", 1, (),
         "`simple_py`: the same `simple` model.py on both servers' Python backends, batch 1", concs=(1, 16)),
]
CASE_IDS = [c.id for c in CASES]
MODEL_ALIASES = {"mlp": ["mlp_b1", "mlp_b32"], "ensemble": ["mlp_b1", "ens1_mlp", "ens_mlp"]}
PROTOCOLS = ["http", "grpc"]
CONCURRENCY = [1, 4, 16]
ENSEMBLE_CASES = [("ens1_mlp", "mlp_b1"), ("ens_mlp", "mlp_b1")]  # (ensemble case, direct case)


@dataclasses.dataclass
class PASettings:
    interval_ms: int
    trials: int
    stability: int
    warmup_ms: int
    # (max_trials, stability %) for the retries after "Failed to obtain stable measurement"
    retries: list


FULL = PASettings(interval_ms=3000, trials=8, stability=20, warmup_ms=1000,
                  retries=[(12, 40), (8, 100)])
QUICK = PASettings(interval_ms=1000, trials=4, stability=20, warmup_ms=300,
                   retries=[(6, 40), (4, 100)])


# ---------------------------------------------------------------------------------------------------
# processes: bounded runs, process groups, cleanup
# ---------------------------------------------------------------------------------------------------

_LIVE: dict = {}  # pid -> Popen of every server we started and have not stopped yet


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_process(proc: subprocess.Popen, term_timeout: float = 20.0) -> None:
    """SIGTERM to the process, wait, then SIGKILL its whole process group (triton_ref.stop)."""
    try:
        triton_ref.stop(proc, timeout=term_timeout)
    finally:
        _LIVE.pop(proc.pid, None)


def _cleanup_all() -> None:
    for proc in list(_LIVE.values()):
        with contextlib.suppress(Exception):
            stop_process(proc, term_timeout=5)


atexit.register(_cleanup_all)


def _on_sigterm(signum, frame):  # run the finally blocks (servers stopped) on SIGTERM / SIGHUP
    raise SystemExit(128 + signum)


def run_bounded(cmd: list, timeout: float, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Runs cmd in its own process group; kills the group on timeout. Never raises for the command."""
    t = time.monotonic()
    try:
        p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, text=True, cwd=cwd, env=env,
                             start_new_session=True)
    except OSError as e:
        return {"rc": None, "stdout": "", "stderr": str(e), "timed_out": False, "seconds": 0.0}
    try:
        out, err = p.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        _killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        timed_out = True
    except BaseException:
        _killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    return {"rc": p.returncode, "stdout": out or "", "stderr": err or "", "timed_out": timed_out,
            "seconds": round(time.monotonic() - t, 3)}


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return f"(no log: {e})"


# ---------------------------------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------------------------------


def proc_status_kb(pid: int) -> dict:
    """VmRSS / VmHWM of a process in kB ({} when it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def _stat(pid: int):
    """(comm, ppid) from /proc/PID/stat, None if gone."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = s[s.index("(") + 1:s.rindex(")")]
    rest = s[s.rindex(")") + 2:].split()
    return comm, int(rest[1])


def descendants(pid: int) -> list:
    children: dict = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:
                children.setdefault(st[1], []).append(int(d))
    out, todo = [], list(children.get(pid, []))
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(children.get(c, []))
    return sorted(out)


def memory_snapshot(pid: int) -> dict:
    """RSS/HWM of the server process and of the server plus all its descendants (kB)."""
    own = proc_status_kb(pid)
    procs = [{"pid": pid, "comm": (_stat(pid) or ("?", 0))[0], **own}]
    for c in descendants(pid):
        st = proc_status_kb(c)
        if st:  # kernel threads / zombies have no Vm* lines
            procs.append({"pid": c, "comm": (_stat(c) or ("?", 0))[0], **st})
    return {
        "server_rss_kb": own.get("VmRSS"),
        "server_hwm_kb": own.get("VmHWM"),
        "server_rss_anon_kb": own.get("RssAnon"),
        "server_rss_file_kb": own.get("RssFile"),
        "total_rss_kb": sum(p.get("VmRSS", 0) for p in procs),
        "total_hwm_kb": sum(p.get("VmHWM", 0) for p in procs),
        "processes": procs,
    }


HZ = os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int | None) -> float:
    """utime+stime (+ reaped children) of pid and its live descendants, in seconds."""
    if pid is None:
        return 0.0
    total = 0
    for p in [pid] + descendants(pid):
        try:
            s = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    return total / HZ


class CpuWatch:
    """CPU time used on the machine by processes other than the benchmark during a phase.

    /proc/stat's user+nice+system time minus this driver's own and reaped children's CPU time
    (perf_analyzer, engine-ceiling) and minus the server's process tree (read from /proc while it
    runs): what is left is someone else's load (a build, a test run) competing for the cores.
    Steal (time the hypervisor gave to other guests) is reported separately. Accurate to ~0.05 core.
    """

    def __init__(self, server_pid: int | None = None):
        self.server_pid = server_pid
        self.t, self.sys, self.own, self.tree = self._snap()

    def _snap(self):
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        v += [0] * (8 - len(v))
        user, nice, system, idle, iowait, irq, softirq, steal = v
        t = os.times()
        # irq/softirq time is included: without IRQ time accounting the kernel also charges it to the
        # interrupted processes' stime (loopback networking), which the subtraction below removes
        return (time.monotonic(), ((user + nice + system + irq + softirq) / HZ, steal / HZ, sum(v) / HZ,
                                   (irq + softirq) / HZ),
                t.user + t.system + t.children_user + t.children_system, _tree_cpu_s(self.server_pid))

    def result(self) -> dict:
        t, sys_, own, tree = self._snap()
        wall = max(t - self.t, 1e-9)
        busy, steal, allj, irq = (a - b for a, b in zip(sys_, self.sys))
        foreign = busy - (own - self.own) - (tree - self.tree)
        return {"wall_s": round(wall, 1), "busy_cores": round(busy / wall, 3),
                "bench_cores": round(((own - self.own) + (tree - self.tree)) / wall, 3),
                "other_cores": round(max(foreign, 0.0) / wall, 3),
                "irq_cores": round(irq / wall, 3),
                "steal_pct": round(100.0 * steal / allj, 2) if allj > 0 else None}


# ---------------------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------------------


def http_ready(port: int, timeout: float = 0.5) -> bool:
    """GET /v2/health/ready over a raw socket (cheap enough to poll every millisecond)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data and len(data) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
        parts = data.split(b"\r\n", 1)[0].split()
        return len(parts) >= 2 and parts[1] == b"200"
    except OSError:
        return False


@dataclasses.dataclass
class Server:
    kind: str  # "rampart" | "triton"
    proc: subprocess.Popen
    http_port: int
    grpc_port: int
    log_path: Path
    ready_ms: float


def two_ports() -> tuple:
    a = triton_ref.free_port()
    b = triton_ref.free_port()
    while b == a:
        b = triton_ref.free_port()
    return a, b


def rampart_cmd(repo: Path, http_port: int, grpc_port: int) -> list:
    return [str(RAMPART_BIN), f"--model-repository={repo}", f"--backend-directory={ORT_DIR}",
            "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
            f"--http-port={http_port}", f"--grpc-port={grpc_port}", "--allow-metrics=false",
            f"--cache-config=local,size={CACHE_BYTES}", f"--backend-config=python,interpreter={PY_WORKER}"]


def start_server(kind: str, cmd: list, http_port: int, grpc_port: int, log_path: Path,
                 env: dict | None = None, cwd: Path | None = None,
                 timeout: float = 60.0) -> Server:
    """Spawns the server (own session) and polls /v2/health/ready every ~1 ms until 200."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
    _LIVE[proc.pid] = proc
    try:
        while True:
            if http_ready(http_port):
                ready_ms = (time.perf_counter() - t0) * 1000.0
                return Server(kind, proc, http_port, grpc_port, log_path, ready_ms)
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with code {proc.returncode} before ready; "
                                   f"log tail:\n{_tail(log_path)}")
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{kind} not ready after {timeout:.0f} s; log tail:\n{_tail(log_path)}")
            time.sleep(0.001)
    except BaseException:
        stop_server_proc(kind, proc)
        raise


def stop_server_proc(kind: str, proc: subprocess.Popen) -> None:
    # Both servers run in their own process group; Triton's Python stubs go with it.
    stop_process(proc, term_timeout=30 if kind == "triton" else 20)


class ServerKind:
    """How to build the repository and start one kind of server."""

    def __init__(self, kind: str, repo: Path, workdir: Path, env: dict | None = None,
                 cwd: Path | None = None, make_cmd=None, ready_timeout: float = 60.0):
        self.kind, self.repo, self.workdir = kind, repo, workdir
        self.env, self.cwd, self.make_cmd, self.ready_timeout = env, cwd, make_cmd, ready_timeout
        self.n = 0

    def start(self) -> Server:
        self.n += 1
        h, g = two_ports()
        return start_server(self.kind, self.make_cmd(self.repo, h, g), h, g,
                            self.workdir / f"{self.kind}-{self.n}.log", env=self.env, cwd=self.cwd,
                            timeout=self.ready_timeout)


# ---------------------------------------------------------------------------------------------------
# repository
# ---------------------------------------------------------------------------------------------------


def make_rampart_repo(out: Path, instances: int, python: bool = False) -> Path:
    """simple, identity_fp32 (+ response cache), mlp, mlp_db (+ dynamic batching) from examples/; the
    identity steps pre/post, the ensembles ens_mlp/ens1_mlp and the sequence model seq."""
    group = f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_CPU\n  }}\n]\n"
    models = {
        "simple": ("simple", ""),
        "identity_fp32": ("identity_fp32", "response_cache {\n  enable: true\n}\n"),
        "mlp": ("mlp", ""),
        "mlp_db": ("mlp", "dynamic_batching {\n  max_queue_delay_microseconds: 0\n}\n"),
    }
    for name, (src, extra) in models.items():
        sdir = EXAMPLES / src
        config = (sdir / "config.pbtxt").read_text()
        if "instance_group" in config or "dynamic_batching" in config or "response_cache" in config:
            raise RuntimeError(f"{sdir}/config.pbtxt already sets what the bench adds; update bench.py")
        config, n = re.subn(r'^name:\s*"[^"]*"', f'name: "{name}"', config, count=1, flags=re.M)
        if n != 1:
            raise RuntimeError(f"no name: line in {sdir}/config.pbtxt")
        if name == "mlp" and not re.search(r"^max_batch_size:\s*32\s*$", config, re.M):
            raise RuntimeError("examples/models/mlp/config.pbtxt: expected max_batch_size: 32")
        mdir = out / name
        (mdir / "1").mkdir(parents=True, exist_ok=True)
        (mdir / "config.pbtxt").write_text(config.rstrip("\n") + "\n" + group + extra)
        shutil.copyfile(sdir / "1" / "model.onnx", mdir / "1" / "model.onnx")
    # The ensembles and the sequence model: the same configs as Triton's (bench/triton_ref.py), with
    # Rampart's built-in `identity` backend for the steps and ONNX Runtime for `seq`.
    for name in triton_ref.ENSEMBLE_IDENTITIES:
        _write_model(out / name, triton_ref.identity_step_config(name, instances, 'backend: "identity"'))
    for name in triton_ref.ENSEMBLES:
        _write_model(out / name, triton_ref.ensemble_config(name))
    seq = _write_model(out / "seq", triton_ref.sequence_config("seq", instances,
                                                             'platform: "onnxruntime_onnx"'))
    try:
        (seq / "1" / "model.onnx").write_bytes(sequence_onnx())
    except Exception as e:  # noqa: BLE001  (onnx missing: seq fails to load, the rest is measured)
        log(f"could not generate the seq model: {e}")
    if not python:
        return out
    # The Python backend's case (only when measured: a worker's start would count in start-to-ready): the
    # same model.py as Triton's. Rampart's workers run as uid 65534 when the bench runs as root, so the
    # repository must be readable by others.
    py = _write_model(out / "simple_py", triton_ref.simple_py_config(instances))
    (py / "1" / "model.py").write_text(triton_ref.SIMPLE_PY)
    for d in [out, *out.parents][:3]:
        d.chmod(d.stat().st_mode | 0o055)
    for f in out.rglob("*"):
        f.chmod(f.stat().st_mode | (0o055 if f.is_dir() else 0o044))
    return out


def _write_model(mdir: Path, config: str) -> Path:
    (mdir / "1").mkdir(parents=True, exist_ok=True)
    (mdir / "config.pbtxt").write_text(config)
    return mdir


def sequence_onnx() -> bytes:
    """Triton's simple_sequence as ONNX (OUTPUT = READY * (INPUT + START)), from
    scripts/gen_sequence_models.py (needs the `onnx` package of .venv)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_sequence_models
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return gen_sequence_models.simple_sequence_model().SerializeToString()


# ---------------------------------------------------------------------------------------------------
# perf_analyzer
# ---------------------------------------------------------------------------------------------------


def _pa_reason(res: dict) -> str:
    out = res["stdout"] + "\n" + res["stderr"]
    if res["timed_out"]:
        return f"timed out after {res['seconds']:.0f} s"
    if "Failed to obtain stable measurement" in out:
        return "no stable measurement"
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    # the first "Error: ..." line (an argument error is followed by the whole usage text), else the
    # last line that looks like an error
    first = [ln for ln in lines if ln.lower().startswith("error")][:1]
    errs = [ln for ln in lines if re.search(r"error|fail|unable|refused|couldn", ln, re.I)]
    msg = (first or errs or lines or ["no output"])[-1]
    return f"rc={res['rc']}: {msg[:160]}"


def _pa_parse_csv(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    rows = list(csv.DictReader(text.splitlines()))
    rows = [r for r in rows if r.get("Concurrency", "").strip().isdigit()]
    if not rows:
        return None
    r = rows[-1]

    def num(key):
        v = (r.get(key) or "").strip()
        try:
            return float(v)
        except ValueError:
            return None

    res = {"infer_per_sec": num("Inferences/Second"), "p50_us": num("p50 latency"),
           "p90_us": num("p90 latency"), "p95_us": num("p95 latency"), "p99_us": num("p99 latency"),
           "avg_us": num("Avg latency"), "csv_row": dict(r)}
    return res if res["infer_per_sec"] is not None else None


_SEQ_IDS = [1]  # next first sequence ID: every perf_analyzer run of a sequence model gets fresh IDs
SEQ_ID_STRIDE = 1_000_000  # IDs per run (a run at c16 uses ~16 per second)


def pa_attempt(server: Server, case: Case, protocol: str, conc: int, interval_ms: int, trials: int,
               stability: int, tmp: Path) -> dict:
    port = server.http_port if protocol == "http" else server.grpc_port
    csv_path = tmp / f"pa-{server.kind}-{case.id}-{protocol}-c{conc}-{time.monotonic_ns()}.csv"
    extra = ["-f", str(csv_path)]
    if case.sequence:
        extra += triton_ref.sequence_args(_SEQ_IDS[0], SEQ_ID_STRIDE)
        _SEQ_IDS[0] += SEQ_ID_STRIDE
    cmd = triton_ref.perf_analyzer_cmd(PERF_ANALYZER, case.model, port, protocol, concurrency=conc,
                                       batch=case.batch, measurement_ms=interval_ms, max_trials=trials,
                                       stability=stability, shapes=dict(case.shapes), extra=extra)
    if case.sequence:
        # Stabilise on the average latency (perf_analyzer's default), not p95: above the slot count
        # every sequence's START (1 request in ~20) waits in the backlog for a whole sequence, so p95
        # sits on the edge between the fast and the slow requests and flips between windows.
        cmd.remove("--percentile=95")
    # perf_analyzer needs at most trials windows (+ start-up and draining): 1.5x + 30 s is generous,
    # and bounds a hung run (seen once with Triton over HTTP at concurrency 16)
    timeout = trials * interval_ms / 1000.0 * 1.5 + 30
    cpu0, n0 = _tree_cpu_s(server.proc.pid), success_count(server, case.model)
    res = run_bounded(cmd, timeout=timeout, cwd=tmp)
    cpu1, n1 = _tree_cpu_s(server.proc.pid), success_count(server, case.model)
    parsed = _pa_parse_csv(csv_path) if res["rc"] == 0 and not res["timed_out"] else None
    with contextlib.suppress(OSError):
        csv_path.unlink()
    att = {"cmd": " ".join(cmd), "interval_ms": interval_ms, "max_trials": trials,
           "stability_pct": stability, "rc": res["rc"], "seconds": res["seconds"],
           "ok": parsed is not None}
    if parsed:
        att.update(parsed)
        if n0 is not None and n1 is not None and n1 > n0:
            # The server's own CPU (all its processes) per request it answered during the whole run
            # (warm-up windows included on both sides): what a server costs, whoever else shares the cores.
            att["server_cpu_us_per_request"] = (cpu1 - cpu0) / (n1 - n0) * 1e6
            att["server_requests"] = n1 - n0
    else:
        att["reason"] = _pa_reason(res) if not (res["rc"] == 0 and not res["timed_out"]) \
            else "no CSV result"
        att["output_tail"] = (res["stdout"] + res["stderr"])[-2000:]
    return att


def success_count(server: Server, model: str) -> int | None:
    """The model's successful requests so far (statistics extension, both servers), None if unreadable."""
    try:
        r = requests.get(f"http://127.0.0.1:{server.http_port}/v2/models/{model}/stats", timeout=10)
        stats = r.json()["model_stats"]
        return sum(int(v["inference_stats"]["success"]["count"]) for v in stats)
    except Exception:  # noqa: BLE001 - a missing number is reported as such
        return None


def measure_cell(server: Server, case: Case, protocol: str, conc: int, pa: PASettings,
                 tmp: Path) -> dict:
    t = time.monotonic()
    cell = {"server": server.kind, "case": case.id, "model": case.model, "batch": case.batch,
            "protocol": protocol, "concurrency": conc, "ok": False, "attempts": []}
    if server.proc.poll() is not None:
        cell["reason"] = f"server exited (code {server.proc.returncode})"
        return cell
    # short discarded warm-up (connections, caches, allocator); its result is ignored
    warm = pa_attempt(server, case, protocol, conc, pa.warmup_ms, 3, 100, tmp)
    cell["warmup"] = {k: warm.get(k) for k in ("ok", "seconds", "infer_per_sec", "reason")}
    for trials, stability in [(pa.trials, pa.stability)] + list(pa.retries):
        if server.proc.poll() is not None:
            cell["reason"] = f"server exited (code {server.proc.returncode})"
            break
        att = pa_attempt(server, case, protocol, conc, pa.interval_ms, trials, stability, tmp)
        cell["attempts"].append(att)
        if att["ok"]:
            cell.update(ok=True, stability_pct=stability, max_trials=trials,
                        **{k: att[k] for k in ("infer_per_sec", "p50_us", "p90_us", "p95_us", "p99_us")})
            cell["server_cpu_us_per_request"] = att.get("server_cpu_us_per_request")
            cell["requests_per_sec"] = att["infer_per_sec"] / case.batch
            cell.pop("reason", None)
            break
        cell["reason"] = att["reason"]
        log(f"  {server.kind} {case.id} {protocol} c{conc}: {att['reason']} "
            f"(max-trials {trials}, -s {stability})")
    if server.proc.poll() is not None and not cell["ok"]:
        cell["reason"] = f"server exited (code {server.proc.returncode})"
    cell["seconds"] = round(time.monotonic() - t, 1)
    return cell


def schedule(cases: list, protocols: list, concs: dict) -> list:
    """(case, protocol, concurrency) in measuring order: case by case, except that `mlp_b1` and the
    ensembles are interleaved (protocol, concurrency, then direct / one-step / three-step back to back,
    where `mlp_b1` is in the list), so that each ensemble-overhead difference is taken between cells
    measured minutes apart at most, not across the whole matrix."""
    group = {d for e, d in ENSEMBLE_CASES} | {e for e, d in ENSEMBLE_CASES}
    ids = [c.id for c in cases]
    interleave = any(e in ids for e, d in ENSEMBLE_CASES) and any(d in ids for e, d in ENSEMBLE_CASES)
    out, done = [], False
    for case in cases:
        if interleave and case.id in group:
            if not done:
                members = [c for c in cases if c.id in group]
                for protocol in protocols:
                    for conc in sorted({n for c in members for n in concs[c.id]}):
                        out += [(c, protocol, conc) for c in members if conc in concs[c.id]]
                done = True
            continue
        out += [(case, protocol, conc) for protocol in protocols for conc in concs[case.id]]
    return out


def run_matrix(server: Server, cases: list, protocols: list, concs: dict, pa: PASettings,
               tmp: Path, cells: list) -> list:
    """Measures every cell, appending to cells as it goes (kept if the run is interrupted).
    concs: case id -> its concurrencies."""
    total = sum(len(concs[c.id]) for c in cases) * len(protocols)
    for case, protocol, conc in schedule(cases, protocols, concs):
        cell = measure_cell(server, case, protocol, conc, pa, tmp)
        cells.append(cell)
        if cell["ok"]:
            log(f"[{len(cells)}/{total}] {server.kind} {case.id} {protocol} c{conc}: "
                f"{cell['infer_per_sec']:,.0f} infer/s, p50/p95/p99 "
                f"{cell['p50_us']:.0f}/{cell['p95_us']:.0f}/{cell['p99_us']:.0f} us"
                f"{'' if cell['stability_pct'] == pa.stability else ' (-s %d)' % cell['stability_pct']}"
                f" [{cell['seconds']:.0f} s]")
        else:
            log(f"[{len(cells)}/{total}] {server.kind} {case.id} {protocol} c{conc}: "
                f"FAILED: {cell['reason']}")
    return cells


# ---------------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------------


def run_ceiling(seconds: float) -> dict:
    """engine-ceiling on the MLP at batch 1 and 32, both modes (no server running)."""
    out = {"seconds": seconds, "runs": [], "errors": []}
    for batch in (1, 32):
        cmd = [CEILING_BIN, "--model", MLP_ONNX, "--batch", batch, "--seconds", seconds,
               "--mode", "both", "--backend-directory", ORT_DIR]
        log(f"engine ceiling: mlp batch {batch}, {seconds:g} s per mode")
        res = run_bounded(cmd, timeout=4 * seconds + 120, cwd=ROOT)
        got = 0
        for line in res["stdout"].splitlines():
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out["runs"].append(json.loads(line))
                    got += 1
        if res["rc"] != 0 or res["timed_out"] or got == 0:
            why = "timed out" if res["timed_out"] else f"rc={res['rc']}"
            msg = (res["stderr"].strip().splitlines() or ["no output"])[-1][:200]
            out["errors"].append({"batch": batch, "reason": f"{why}: {msg}"})
            log(f"engine ceiling batch {batch} failed: {why}: {msg}")
    return out


def ceiling_rate(ceiling: dict, batch: int, mode: str = "raw"):
    for r in ceiling.get("runs", []):
        if r.get("batch") == batch and r.get("mode") == mode:
            return r.get("infer_per_sec")
    return None


def check_models(srv: Server, cases: list) -> list:
    """Correctness of the ensembles (= mlp) and of seq on the matrix server, when they are measured."""
    ids = {c.id for c in cases}
    ens = tuple(e for e in triton_ref.ENSEMBLES if e in ids)
    if not ens and "seq" not in ids:
        return []
    fails = triton_ref.check_ensembles_and_sequences(srv.http_port, ensembles=ens, sequence="seq" in ids)
    for f in fails:
        log(f"{srv.kind}: model check failed: {f}")
    return fails


def measure_server(sk: ServerKind, starts: int, cases: list, protocols: list, concs: dict,
                   pa: PASettings, tmp: Path) -> dict:
    """Start-to-ready x starts (+ idle RSS 1 s after ready), then the matrix on a fresh server.
    concs: case id -> its concurrencies."""
    res = {"ready_ms": [], "idle": [], "errors": []}
    for i in range(starts):
        try:
            srv = sk.start()
        except Exception as e:  # noqa: BLE001
            res["errors"].append(f"start {i + 1}: {e}")
            log(f"{sk.kind} start {i + 1} failed: {e}")
            continue
        try:
            res["ready_ms"].append(round(srv.ready_ms, 2))
            time.sleep(1.0)
            snap = memory_snapshot(srv.proc.pid)
            res["idle"].append(snap)
            log(f"{sk.kind} start {i + 1}/{starts}: ready after {srv.ready_ms:.1f} ms, idle RSS "
                f"{(snap['server_rss_kb'] or 0) / MIB:.1f} MiB (total {snap['total_rss_kb'] / MIB:.1f} MiB, "
                f"{len(snap['processes'])} processes)")
        finally:
            stop_server_proc(sk.kind, srv.proc)
    log(f"{sk.kind}: starting the server for the matrix")
    try:
        srv = sk.start()
    except Exception as e:  # noqa: BLE001
        res["errors"].append(f"matrix server: {e}")
        log(f"{sk.kind}: could not start the matrix server: {e}")
        res["cells"] = [{"server": sk.kind, "case": c.id, "protocol": p, "concurrency": n, "ok": False,
                         "reason": "server did not start", "batch": c.batch}
                        for c in cases for p in protocols for n in concs[c.id]]
        return res
    try:
        time.sleep(1.0)
        res["matrix_server_idle"] = memory_snapshot(srv.proc.pid)
        res["matrix_server_ready_ms"] = round(srv.ready_ms, 2)
        res["model_check_failures"] = check_models(srv, cases)
        res["errors"] += [f"model check: {f}" for f in res["model_check_failures"]]
        t = time.monotonic()
        watch = CpuWatch(srv.proc.pid)
        res["cells"] = []
        run_matrix(srv, cases, protocols, concs, pa, tmp, res["cells"])
        res["cpu"] = watch.result()
        res["matrix_seconds"] = round(time.monotonic() - t, 1)
        log(f"{sk.kind} matrix: {res['matrix_seconds']:.0f} s; other processes used "
            f"{res['cpu']['other_cores']:.2f} cores meanwhile")
        res["peak"] = memory_snapshot(srv.proc.pid)
        res["exited_during_matrix"] = srv.proc.poll()
        if srv.proc.poll() is not None:
            res["errors"].append(f"server exited with code {srv.proc.returncode} during the matrix; "
                                 f"log tail:\n{_tail(srv.log_path)}")
    finally:
        stop_server_proc(sk.kind, srv.proc)
    return res


# ---------------------------------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------------------------------


def machine_info() -> dict:
    info = {"nproc": os.cpu_count()}
    r = run_bounded(["nproc"], timeout=10)
    if r["rc"] == 0:
        info["nproc"] = int(r["stdout"].strip())
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_kb"] = int(line.split()[1])
    info["kernel"] = " ".join(os.uname()[i] for i in (0, 2, 4))
    r = run_bounded(["git", "-C", ROOT, "rev-parse", "HEAD"], timeout=20)
    info["git_commit"] = r["stdout"].strip() if r["rc"] == 0 else "unknown"
    r = run_bounded(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], timeout=30)
    info["git_dirty"] = bool(r["stdout"].strip()) if r["rc"] == 0 else None
    r = run_bounded([PERF_ANALYZER, "--version"], timeout=30)
    m = re.search(r"Perf Analyzer Version\s+(.+)", r["stdout"] + r["stderr"])
    info["perf_analyzer"] = m.group(1).strip() if m else "unknown"
    r = run_bounded([RAMPART_BIN, "--version"], timeout=30)
    info["rampart_version"] = r["stdout"].strip() if r["rc"] == 0 else "unknown"
    # With run.sh --no-build the binaries may predate the tree that the commit above describes.
    with contextlib.suppress(OSError):
        built = min(RAMPART_BIN.stat().st_mtime, CEILING_BIN.stat().st_mtime)
        newer = [str(f.relative_to(ROOT)) for d in ("crates", "bench/src") for f in (ROOT / d).rglob("*")
                 if f.is_file() and "target" not in f.parts and f.stat().st_mtime > built]
        newer += [n for n in ("Cargo.toml", "Cargo.lock", "bench/Cargo.toml")
                  if (ROOT / n).stat().st_mtime > built]
        info["sources_newer_than_binaries"] = sorted(newer)
    with contextlib.suppress(OSError):
        info["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    return info


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------


def _esc(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _fmt_rate(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


def _fmt_cpu(x) -> str:
    return "—" if x is None else f"{x:.0f}"


def _fmt_us(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


def _mib(kb) -> str:
    return "—" if kb is None else f"{kb / MIB:.1f}"


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _cell_index(cells: list) -> dict:
    return {(c["case"], c["protocol"], c["concurrency"]): c for c in cells or []}


def _failed(cell) -> str:
    if cell is None:
        return "not measured"
    return f"failed: {_esc(cell.get('reason', 'unknown'))}"


def _case_concs(sel: dict, case_id: str) -> list:
    """The concurrencies a case was measured at (results of older runs: the global list)."""
    return (sel.get("case_concurrency") or {}).get(case_id, sel["concurrency"])


OVERHEAD_METRICS = [("p50_us", "p50 µs"), ("p99_us", "p99 µs"),
                    ("server_cpu_us_per_request", "CPU µs/req")]


def ensemble_overhead(data: dict) -> list:
    """Per protocol, concurrency, ensemble and metric: the ensemble's value, the direct `mlp`'s and the
    difference (what the ensemble adds), on both servers, and the Rampart/Triton ratios."""
    sel = data["settings"]
    rc = _cell_index((data.get("rampart") or {}).get("cells"))
    tc = _cell_index((data.get("triton") or {}).get("cells"))

    def val(idx, case, proto, conc, key):
        c = idx.get((case, proto, conc))
        return c.get(key) if c and c.get("ok") else None

    def sub(a, b):
        return None if a is None or b is None else a - b

    def ratio(a, b, positive=False):
        if a is None or b is None or b <= 0 or (positive and a <= 0):
            return None
        return a / b

    rows = []
    for ens, direct in ENSEMBLE_CASES:
        if ens not in sel["models"] or direct not in sel["models"]:
            continue
        concs = [n for n in _case_concs(sel, ens) if n in _case_concs(sel, direct)]
        for proto in sel["protocols"]:
            for conc in concs:
                for key, label in OVERHEAD_METRICS:
                    rd, re_ = val(rc, direct, proto, conc, key), val(rc, ens, proto, conc, key)
                    td, te = val(tc, direct, proto, conc, key), val(tc, ens, proto, conc, key)
                    ra, ta = sub(re_, rd), sub(te, td)
                    rows.append({"ensemble": ens, "direct": direct, "protocol": proto,
                                 "concurrency": conc, "metric": key, "label": label,
                                 "rampart_direct": rd, "rampart_ensemble": re_, "rampart_added": ra,
                                 "triton_direct": td, "triton_ensemble": te, "triton_added": ta,
                                 "ratio_added": ratio(ra, ta, positive=True),
                                 "ratio_ensemble": ratio(re_, te)})
    return rows


def render_ensemble_overhead(data: dict, L: list) -> None:
    rows = data.get("ensemble_overhead") or []
    sel = data["settings"]
    wanted = [e for e, d in ENSEMBLE_CASES if e in sel["models"]]
    if not wanted:
        return
    L.append("## Ensemble overhead (ensemble − calling `mlp` directly)")
    L.append("")
    if not rows:
        L.append("Not computed: needs `mlp_b1` in `--models` next to the ensembles (`--models ensemble`).")
        L.append("")
        return
    L.append("*added* = the ensemble's value − the direct `mlp` batch-1 value at the same protocol and "
             "concurrency (the tables above). `ens1_mlp` (one step, `mlp`) is the ensemble scheduler's "
             "own cost; `ens_mlp` adds the identity steps `pre` and `post`, which run in Rampart's "
             "built-in `identity` backend but, on Triton, in Python-backend `model.py` files (the wheel "
             "has no other backend): Triton's `ens_mlp` overhead includes two Python-stub round trips. "
             "*added R/T* = Rampart's added ÷ Triton's added (< 1: Rampart's ensemble costs less); "
             "*ensemble R/T* = the ensemble's absolute value, Rampart ÷ Triton. —: a side not measured, "
             "or an added value ≤ 0 (within the run-to-run noise).")
    L.append("")

    def us(v, signed=False):
        return "—" if v is None else (f"{v:+,.0f}" if signed else f"{v:,.0f}")

    def x(v):
        return "—" if v is None else f"{v:.2f}×"

    for proto in sel["protocols"]:
        prow = [r for r in rows if r["protocol"] == proto]
        if not prow:
            continue
        L.append(f"### {'HTTP' if proto == 'http' else 'gRPC'}")
        L.append("")
        hdr = ["c", "ensemble", "metric", "Rampart direct", "Rampart ensemble", "Rampart added",
               "Triton direct", "Triton ensemble", "Triton added", "added R/T", "ensemble R/T"]
        L.append("| " + " | ".join(hdr) + " |")
        L.append("|---:|---|---|" + "---:|" * (len(hdr) - 3))
        for r in sorted(prow, key=lambda r: (r["concurrency"], r["ensemble"] != "ens1_mlp")):
            L.append(f"| {r['concurrency']} | `{r['ensemble']}` | {r['label']} | "
                     f"{us(r['rampart_direct'])} | {us(r['rampart_ensemble'])} | "
                     f"{us(r['rampart_added'], True)} | {us(r['triton_direct'])} | "
                     f"{us(r['triton_ensemble'])} | {us(r['triton_added'], True)} | "
                     f"{x(r['ratio_added'])} | {x(r['ratio_ensemble'])} |")
        L.append("")


def _mark(cell, pa: PASettings) -> str:
    return "" if cell.get("stability_pct") in (None, pa.stability) else f" †{cell['stability_pct']}"


OTHER_LOAD_WARN = 0.15  # cores


def _other_load(data: dict) -> str:
    parts, worst, steal = [], 0.0, []
    for label, cpu in (("engine ceiling", (data.get("ceiling") or {}).get("cpu")),
                       ("Rampart matrix", (data.get("rampart") or {}).get("cpu")),
                       ("Triton matrix", (data.get("triton") or {}).get("cpu"))):
        if cpu:
            parts.append(f"{label} {cpu['other_cores']:.2f}")
            worst = max(worst, cpu["other_cores"])
            if cpu.get("steal_pct") is not None:
                steal.append(cpu["steal_pct"])
    if not parts:
        return "not measured"
    s = ("cores busy with processes other than the benchmark: " + ", ".join(parts)
         + (f"; steal ≤ {max(steal):.1f} %" if steal else ""))
    if worst > OTHER_LOAD_WARN:
        s += " — **the machine was not quiet: these numbers are disturbed**"
    return s


def render(data: dict) -> str:
    pa = PASettings(**data["settings"]["perf_analyzer"])
    m = data["machine"]
    ram = data["rampart"]
    tri = data.get("triton")
    vs = data["settings"]["vs_triton"]
    L = []
    L.append(f"# Rampart benchmark — {data['date_utc']}")
    L.append("")
    if data.get("aborted"):
        L.append(f"**Run aborted: {_esc(data['aborted'])}** (partial results below)")
        L.append("")
    commit = m.get("git_commit", "unknown")
    dirty = " + uncommitted changes" if m.get("git_dirty") else ""
    mode = "quick (for checking the script, not for quoting)" if data["settings"]["quick"] else "full"
    L += ["| | |", "|---|---|",
          f"| machine | {m.get('nproc')} CPUs (`nproc`), {_esc(m.get('cpu', '?'))}, "
          f"{(m.get('mem_total_kb') or 0) / MIB / MIB:.1f} GiB RAM, {_esc(m.get('kernel'))} |",
          f"| rampart | `{commit[:12]}`{dirty} ({_esc(m.get('rampart_version'))}) |",
          f"| perf_analyzer | {_esc(m.get('perf_analyzer'))} |"]
    stale = m.get("sources_newer_than_binaries")
    if stale:
        L.insert(-1, f"| ⚠ binaries | older than {len(stale)} source file(s) (e.g. `{_esc(stale[0])}`): "
                     "built from an earlier tree than this commit (run.sh --no-build?) |")
    if vs:
        L.append(f"| triton | {triton_ref.TRITON_VERSION} from the nvidia-pytriton "
                 f"{triton_ref.PYTRITON_VERSION} wheel; every model in the Python backend "
                 f"(MLP through the `onnxruntime` package, 1 thread) |")
    L += [f"| mode | {mode}: `--measurement-interval {pa.interval_ms} --max-trials {pa.trials} "
          f"-s {pa.stability} --percentile=95`, discarded {pa.warmup_ms} ms warm-up run per cell |",
          f"| instances | {data['settings']['instances']} per model (`instance_group KIND_CPU`), both servers |",
          f"| load average | start {' '.join(m.get('loadavg_start', []))} / end "
          f"{' '.join(m.get('loadavg_end', []))} |",
          f"| other CPU load | {_other_load(data)} |",
          f"| date | {data['date_utc']}; run took {data.get('wall_seconds', 0) / 60:.1f} min |",
          ""]

    # ---- matrix tables
    L.append("## Throughput and latency (perf_analyzer)")
    L.append("")
    L.append("infer/s is perf_analyzer's *Inferences/Second* (batch samples per second); latencies are "
             "client-side per request, in µs. Ratio = Rampart infer/s ÷ Triton infer/s.")
    if vs:
        L.append("Triton runs every model in its Python backend (the wheel has no ONNX Runtime backend), "
                 "so `simple` and the MLP rows compare Rampart+ONNX Runtime against Triton+Python; "
                 "`identity_fp32` is answered from the response cache on both (Triton's frontend alone).")
    L.append("CPU µs/req: the server's own CPU time (utime + stime of all its processes, Triton's Python "
             "backend stubs included) per request it answered during the cell's perf_analyzer runs. "
             "perf_analyzer shares the two cores, so throughput is capped by the client's CPU too; this "
             "column is the server's cost alone.")
    L.append(f"†N: perf_analyzer reached no stable measurement at -s {pa.stability} and the cell was "
             "measured with the looser stability threshold N %.")
    L.append("")
    rc = _cell_index(ram.get("cells"))
    tc = _cell_index(tri.get("cells")) if tri else {}
    sel = data["settings"]
    for case in [c for c in CASES if c.id in sel["models"]]:
        for protocol in sel["protocols"]:
            L.append(f"### {case.title} — {protocol.upper() if protocol == 'http' else 'gRPC'}")
            L.append("")
            b32 = case.batch > 1
            hdr = ["concurrency", "Rampart infer/s"] + (["Rampart req/s"] if b32 else []) + \
                  ["p50 µs", "p95 µs", "p99 µs", "CPU µs/req", "Triton infer/s"] + \
                  (["Triton req/s"] if b32 else []) + ["Triton p99 µs", "Triton CPU µs/req", "Rampart/Triton"]
            L.append("| " + " | ".join(hdr) + " |")
            L.append("|" + "---:|" * len(hdr))
            for conc in _case_concs(sel, case.id):
                r = rc.get((case.id, protocol, conc))
                t = tc.get((case.id, protocol, conc)) if tri else None
                row = [str(conc)]
                if r and r.get("ok"):
                    row.append(_fmt_rate(r["infer_per_sec"]) + _mark(r, pa))
                    if b32:
                        row.append(_fmt_rate(r["requests_per_sec"]))
                    row += [_fmt_us(r["p50_us"]), _fmt_us(r["p95_us"]), _fmt_us(r["p99_us"]),
                            _fmt_cpu(r.get("server_cpu_us_per_request"))]
                else:
                    row += [_failed(r)] + ([""] if b32 else []) + ["", "", "", ""]
                if not vs:
                    row += ["not run"] + (["—"] if b32 else []) + ["—", "—", "—"]
                elif t and t.get("ok"):
                    row.append(_fmt_rate(t["infer_per_sec"]) + _mark(t, pa))
                    if b32:
                        row.append(_fmt_rate(t["requests_per_sec"]))
                    row.append(_fmt_us(t["p99_us"]))
                    row.append(_fmt_cpu(t.get("server_cpu_us_per_request")))
                    row.append(f"{r['infer_per_sec'] / t['infer_per_sec']:.2f}×"
                               if r and r.get("ok") and t["infer_per_sec"] else "—")
                else:
                    row += [_failed(t)] + ([""] if b32 else []) + ["", "", "—"]
                L.append("| " + " | ".join(row) + " |")
            L.append("")

    render_ensemble_overhead(data, L)
    if "seq" in sel["models"]:
        L.append(f"`seq`: perf_analyzer's sequence mode (`{' '.join(triton_ref.sequence_args(1)[:-2])}`, "
                 "fresh `--sequence-id-range` per run, stabilised on the average latency instead of p95): "
                 "each concurrent context runs one sequence at a "
                 "time (START on its first request, END on its last), so concurrency = open sequences. "
                 f"With max_batch_size {triton_ref.SEQUENCE_MAX_BATCH} and {sel['instances']} instance(s) the "
                 f"direct strategy has {triton_ref.SEQUENCE_MAX_BATCH * sel['instances']} slots: above that "
                 "concurrency the extra sequences wait "
                 "in the backlog for a slot (the p99 includes that wait).")
        L.append("")

    # ---- ceiling
    ceil = data.get("ceiling", {})
    L.append("## Engine ceiling (in-process ONNX Runtime, 1 thread, `engine-ceiling`)")
    L.append("")
    L.append("`raw`: an ort session alone; `rampart`: the same model through Rampart's engine wrapper "
             f"(input binding + output copies). MLP 784→256→10, {ceil.get('seconds', '?')} s per row.")
    L.append("")
    L.append("| batch | mode | runs/s | infer/s | p50 µs | p95 µs | p99 µs |")
    L.append("|---:|---|---:|---:|---:|---:|---:|")
    for r in sorted(ceil.get("runs", []), key=lambda r: (r.get("batch", 0), r.get("mode") != "raw")):
        L.append(f"| {r.get('batch')} | {r.get('mode')} | {_fmt_rate(r.get('runs_per_sec'))} | "
                 f"{_fmt_rate(r.get('infer_per_sec'))} | {r.get('p50_us', 0):.1f} | "
                 f"{r.get('p95_us', 0):.1f} | {r.get('p99_us', 0):.1f} |")
    for e in ceil.get("errors", []):
        L.append(f"| {e['batch']} | — | failed: {_esc(e['reason'])} | | | | |")
    if not ceil.get("runs") and not ceil.get("errors"):
        L.append("| — | — | not measured | | | | |")
    L.append("")

    # ---- memory / start
    L.append("## Memory and start-up")
    L.append("")
    L.append("Start-to-ready: spawn → first `200` from `GET /v2/health/ready` (polled every ~1 ms), median "
             "of the starts. Idle RSS: VmRSS 1 s after ready (median of the starts). Peak: VmHWM after the "
             "matrix (includes start-up). MiB = 2²⁰ bytes. For Triton, *total* adds its child processes "
             "(the Python backend stubs, one per model instance); the peak total is a sum of per-process "
             "VmHWM, an upper bound (peaks need not coincide, shared pages counted per process).")
    L.append("")

    def mem_stats(res):
        if not res:
            return {}
        idle = res.get("idle", [])
        peak = res.get("peak") or {}
        return {
            "ready": _median(res.get("ready_ms", [])),
            "ready_all": ", ".join(f"{x:.0f}" if x >= 100 else f"{x:.1f}" for x in res.get("ready_ms", [])),
            "n": len(res.get("ready_ms", [])),
            "idle_server": _median([s.get("server_rss_kb") for s in idle]),
            "idle_total": _median([s.get("total_rss_kb") for s in idle]),
            "idle_anon": _median([s.get("server_rss_anon_kb") for s in idle]),
            "idle_file": _median([s.get("server_rss_file_kb") for s in idle]),
            "nproc": _median([len(s.get("processes", [])) for s in idle]),
            "peak_server": peak.get("server_hwm_kb"),
            "peak_total": peak.get("total_hwm_kb"),
            "peak_nproc": len(peak.get("processes", [])) if peak else None,
        }

    rs, ts = mem_stats(ram), mem_stats(tri)

    def _nproc(st):
        n = st.get("nproc")
        return "—" if n is None else f"{n:.0f} process{'es' if n != 1 else ''}"
    tcol = (lambda v: v) if vs else (lambda v: "not run")

    def ms(v):
        return "—" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")

    L.append("| | Rampart | Triton |")
    L.append("|---|---:|---:|")
    L.append(f"| start-to-ready, median (ms) | {ms(rs.get('ready'))} | {tcol(ms(ts.get('ready')))} |")
    L.append(f"| start-to-ready samples (ms) | {rs.get('ready_all') or '—'} | "
             f"{tcol(ts.get('ready_all') or '—')} |")
    L.append(f"| idle RSS, server process (MiB) | {_mib(rs.get('idle_server'))} | "
             f"{tcol(_mib(ts.get('idle_server')))} |")
    L.append(f"| … of which anonymous / file-backed (MiB) | {_mib(rs.get('idle_anon'))} / "
             f"{_mib(rs.get('idle_file'))} | {tcol(_mib(ts.get('idle_anon')) + ' / ' + _mib(ts.get('idle_file')))} |")
    L.append(f"| idle RSS, server + child processes (MiB) | {_mib(rs.get('idle_total'))} "
             f"({_nproc(rs)}) | {tcol(_mib(ts.get('idle_total')) + ' (%s)' % _nproc(ts))} |")
    L.append(f"| peak RSS after the matrix, server VmHWM (MiB) | {_mib(rs.get('peak_server'))} | "
             f"{tcol(_mib(ts.get('peak_server')))} |")
    L.append(f"| peak, Σ VmHWM server + children (MiB, upper bound) | {_mib(rs.get('peak_total'))} | "
             f"{tcol(_mib(ts.get('peak_total')))} |")
    L.append("")
    errs = [(k, e) for k, res in (("Rampart", ram), ("Triton", tri)) if res for e in res.get("errors", [])]
    if tri and tri.get("install_error"):
        errs.append(("Triton", f"install failed: {tri['install_error']}"))
    if errs:
        L.append("Errors:")
        L.append("")
        for k, e in errs:
            L.append(f"- {k}: {_esc(e.splitlines()[0] if e else e)}")
        L.append("")

    # ---- targets
    L.append("## Targets")
    L.append("")
    L.append("| target | measured | goal | result |")
    L.append("|---|---|---|---|")
    for t in data.get("targets", []):
        L.append(f"| {_esc(t['target'])} | {_esc(t['measured'])} | {_esc(t['goal'])} | {t['result']} |")
    L.append("")
    return "\n".join(L)


def evaluate_targets(data: dict) -> list:
    out = []
    ram, tri = data["rampart"], data.get("triton")
    rc = _cell_index(ram.get("cells"))
    tc = _cell_index(tri.get("cells")) if tri else {}
    ceil = data.get("ceiling", {})
    sel = data["settings"]

    def add(target, measured, goal, ok):
        out.append({"target": target, "measured": measured, "goal": goal,
                    "result": "not measured" if ok is None else ("met" if ok else "**not met**")})

    def cell(idx, case, proto, conc):
        c = idx.get((case, proto, conc))
        return c if c and c.get("ok") else None

    for proto in PROTOCOLS:
        pname = "HTTP" if proto == "http" else "gRPC"
        # 1. simple c16 >= 2x Triton's cache-hit identity_fp32 c16 on the same protocol
        name = f"`simple` {pname} c16 ≥ 2× Triton's cache-hit `identity_fp32` c16 ({pname})"
        r, t = cell(rc, "simple", proto, 16), cell(tc, "identity_fp32", proto, 16)
        if not data["settings"]["vs_triton"]:
            add(name, "needs --vs-triton", "≥ 2.00×", None)
        elif r is None or t is None:
            missing = [w for w, c in (("Rampart `simple` c16", r), ("Triton `identity_fp32` c16", t))
                       if c is None]
            add(name, " and ".join(missing) + " not measured", "≥ 2.00×", None)
        else:
            ratio = r["infer_per_sec"] / t["infer_per_sec"]
            add(name, f"{ratio:.2f}× ({_fmt_rate(r['infer_per_sec'])} vs {_fmt_rate(t['infer_per_sec'])} infer/s)",
                "≥ 2.00×", ratio >= 2.0)
        # 1b. the same comparison in server CPU per request (independent of the client sharing the cores)
        name = f"`simple` {pname} c16 server CPU/request ≤ ½ of Triton's cache-hit `identity_fp32` c16 ({pname})"
        rc_cpu = r.get("server_cpu_us_per_request") if r else None
        tc_cpu = t.get("server_cpu_us_per_request") if t else None
        if not data["settings"]["vs_triton"] or rc_cpu is None or tc_cpu is None:
            add(name, "not measured", "≤ 0.50×", None)
        else:
            ratio = rc_cpu / tc_cpu
            add(name, f"{ratio:.2f}× ({rc_cpu:.0f} vs {tc_cpu:.0f} µs per request)", "≤ 0.50×", ratio <= 0.5)
    ceil32, ceil1 = ceiling_rate(ceil, 32), ceiling_rate(ceil, 1)
    for proto in PROTOCOLS:
        pname = "HTTP" if proto == "http" else "gRPC"
        # 2. mlp batch 32, best concurrency >= 85 % of the raw ceiling at batch 32
        name = f"`mlp` batch 32, best concurrency ({pname}) ≥ 85 % of the raw engine ceiling at batch 32"
        cs = [c for c in (cell(rc, "mlp_b32", proto, n) for n in sel["concurrency"]) if c]
        if not cs or not ceil32:
            add(name, "mlp batch 32 or the ceiling not measured", "≥ 85 %", None)
        else:
            best = max(cs, key=lambda c: c["infer_per_sec"])
            frac = best["infer_per_sec"] / ceil32
            add(name, f"{frac * 100:.0f} % ({_fmt_rate(best['infer_per_sec'])} infer/s at c{best['concurrency']}"
                      f" vs {_fmt_rate(ceil32)})", "≥ 85 %", frac >= 0.85)
    for proto in PROTOCOLS:
        pname = "HTTP" if proto == "http" else "gRPC"
        # 3. mlp_db batch 1 c16 >= 1.0x raw ceiling at batch 1
        name = f"`mlp_db` batch 1, c16 ({pname}) ≥ 1.0× the raw engine ceiling at batch 1"
        c = cell(rc, "mlp_db", proto, 16)
        if c is None or not ceil1:
            add(name, "mlp_db c16 or the ceiling not measured", "≥ 1.00×", None)
        else:
            ratio = c["infer_per_sec"] / ceil1
            add(name, f"{ratio:.2f}× ({_fmt_rate(c['infer_per_sec'])} vs {_fmt_rate(ceil1)} infer/s)",
                "≥ 1.00×", ratio >= 1.0)
    for proto in PROTOCOLS:
        pname = "HTTP" if proto == "http" else "gRPC"
        name = f"`simple` p99 at concurrency 1 ({pname})"
        c = cell(rc, "simple", proto, 1)
        if c is None:
            add(name, "not measured", "≤ 0.50 ms", None)
        else:
            add(name, f"{c['p99_us'] / 1000:.3f} ms", "≤ 0.50 ms", c["p99_us"] <= 500)
    idle = _median([s.get("server_rss_kb") for s in ram.get("idle", [])])
    add("Rampart idle RSS (1 s after ready, median)",
        "not measured" if idle is None else f"{idle / MIB:.1f} MiB", "≤ 25 MiB",
        None if idle is None else idle / MIB <= 25)
    ready = _median(ram.get("ready_ms", []))
    add("Rampart start-to-ready (median)", "not measured" if ready is None else f"{ready:.1f} ms",
        "≤ 150 ms", None if ready is None else ready <= 150)
    return out


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------


def _csv_list(s: str, allowed: list, conv=str, aliases: dict | None = None) -> list:
    out = []
    for item in (x.strip() for x in s.split(",") if x.strip()):
        for v in (aliases or {}).get(item, [item]):
            v = conv(v)
            if allowed is not None and v not in allowed:
                raise argparse.ArgumentTypeError(f"{v!r} is not one of {allowed}")
            if v not in out:
                out.append(v)
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Rampart benchmark driver (see bench/README.md)")
    ap.add_argument("--vs-triton", action="store_true",
                    help="also install, start and measure the real Triton 2.51 (bench/triton_ref.py)")
    ap.add_argument("--quick", action="store_true",
                    help="short windows (1000 ms) and fewer trials: for checking the script")
    ap.add_argument("--models", default=",".join(CASE_IDS),
                    help=f"comma list of {CASE_IDS} ('mlp' = mlp_b1,mlp_b32; 'ensemble' = "
                         "mlp_b1,ens1_mlp,ens_mlp); default: all")
    ap.add_argument("--protocols", default="http,grpc", help="comma list of http,grpc")
    ap.add_argument("--concurrency", default=None,
                    help="comma list of concurrencies for every case (default: 1,4,16; 1,16 for "
                         "ens_mlp and ens1_mlp; 1,8,16 for seq)")
    ap.add_argument("--instances", type=int, default=1, help="model instances (both servers), default 1")
    ap.add_argument("--out", type=Path, default=None,
                    help="report file (default bench/results/<UTC date-time>.md); JSON written next to it")
    ap.add_argument("--starts", type=int, default=5, help="Rampart starts for start-to-ready (default 5)")
    ap.add_argument("--triton-starts", type=int, default=None,
                    help="Triton starts for start-to-ready (default 3, --quick 2)")
    ap.add_argument("--ceiling-seconds", type=float, default=5.0,
                    help="engine-ceiling seconds per batch and mode (default 5)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (repos, server logs)")
    a = ap.parse_args(argv)
    try:
        a.models = _csv_list(a.models, CASE_IDS, aliases=MODEL_ALIASES)
        a.protocols = _csv_list(a.protocols, PROTOCOLS, conv=str.lower)
        explicit = a.concurrency is not None
        a.concurrency = _csv_list(a.concurrency, None, conv=int) if explicit else None
    except (argparse.ArgumentTypeError, ValueError) as e:
        ap.error(str(e))
    if explicit and any(c < 1 for c in a.concurrency):
        ap.error("concurrency must be >= 1")
    # per case: --concurrency if given, else the case's own list, else CONCURRENCY
    a.case_concurrency = {c.id: list(a.concurrency if explicit else (c.concs or CONCURRENCY))
                          for c in CASES if c.id in a.models}
    a.concurrency = sorted({n for v in a.case_concurrency.values() for n in v})
    if a.instances < 1 or a.starts < 1:
        ap.error("--instances and --starts must be >= 1")
    if a.triton_starts is None:
        a.triton_starts = 2 if a.quick else 3
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_sigterm)
    now = dt.datetime.now(dt.timezone.utc)
    out_md = a.out or ROOT / "bench" / "results" / f"{now.strftime('%Y%m%dT%H%M%SZ')}.md"
    out_md = out_md if out_md.is_absolute() else Path.cwd() / out_md
    out_json = out_md.with_suffix(".json")
    for p in (RAMPART_BIN, CEILING_BIN, PERF_ANALYZER, MLP_ONNX):
        if not p.exists():
            print(f"missing {p}: run bash bench/run.sh (it sets up and builds everything)", file=sys.stderr)
            return 2
    pa = QUICK if a.quick else FULL
    cases = [c for c in CASES if c.id in a.models]
    data = {
        "date_utc": now.strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {"quick": a.quick, "vs_triton": a.vs_triton, "models": a.models,
                     "protocols": a.protocols, "concurrency": a.concurrency,
                     "case_concurrency": a.case_concurrency, "instances": a.instances,
                     "starts": a.starts, "triton_starts": a.triton_starts,
                     "perf_analyzer": dataclasses.asdict(pa), "cache_bytes": CACHE_BYTES},
        "machine": {}, "ceiling": {}, "rampart": {}, "triton": None, "phases": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="rampart-bench-"))
    log(f"work dir {tmp}; report -> {out_md}")
    rc = 0
    try:
        data["machine"] = machine_info()
        t = time.monotonic()
        watch = CpuWatch()
        data["ceiling"] = run_ceiling(a.ceiling_seconds)
        data["ceiling"]["cpu"] = watch.result()
        data["phases"]["ceiling_s"] = round(time.monotonic() - t, 1)

        # Rampart ------------------------------------------------------------------------------
        t = time.monotonic()
        repo = make_rampart_repo(tmp / "rampart-models", a.instances, "py_simple" in [c.id for c in cases])
        sk = ServerKind("rampart", repo, tmp, cwd=ROOT, make_cmd=rampart_cmd, ready_timeout=60)
        data["rampart"] = measure_server(sk, a.starts, cases, a.protocols, a.case_concurrency, pa, tmp)
        data["phases"]["rampart_s"] = round(time.monotonic() - t, 1)

        # Triton -------------------------------------------------------------------------------
        if a.vs_triton:
            t = time.monotonic()
            data["triton"] = {"errors": []}
            try:
                inst = triton_ref.install(ROOT)
            except Exception as e:  # noqa: BLE001
                log(f"Triton install failed: {e}")
                data["triton"]["install_error"] = str(e).splitlines()[0][:300]
                data["triton"]["cells"] = [{"server": "triton", "case": c.id, "protocol": p,
                                            "concurrency": n, "ok": False, "batch": c.batch,
                                            "reason": "Triton install failed"}
                                           for c in cases for p in a.protocols
                                           for n in a.case_concurrency[c.id]]
            else:
                trepo = triton_ref.make_repo(tmp / "triton-models", MLP_ONNX, a.instances,
                                             python_case="py_simple" in [c.id for c in cases])

                def tcmd(repo, h, g):
                    return triton_ref.server_cmd(inst, repo, h, g, CACHE_BYTES)

                tsk = ServerKind("triton", trepo, tmp, env=inst.env, cwd=inst.root, make_cmd=tcmd,
                                 ready_timeout=240)
                data["triton"] = measure_server(tsk, a.triton_starts, cases, a.protocols,
                                                a.case_concurrency, pa, tmp)
            data["phases"]["triton_s"] = round(time.monotonic() - t, 1)
    except BaseException as e:  # noqa: BLE001  (KeyboardInterrupt / SystemExit too: still report)
        data["aborted"] = f"{type(e).__name__}: {e}"
        log(f"aborted: {data['aborted']}")
        rc = 1
        if not isinstance(e, Exception):
            rc = 130 if isinstance(e, KeyboardInterrupt) else (e.code if isinstance(e.code, int) else 1)
    finally:
        _cleanup_all()
        if a.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(OSError):
        data["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    data["wall_seconds"] = round(time.monotonic() - T0, 1)
    data["targets"] = evaluate_targets(data)
    data["ensemble_overhead"] = ensemble_overhead(data)
    report = render(data)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(report + "\n")
    out_json.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(report, flush=True)
    log(f"wrote {out_md} and {out_json.name} ({data['wall_seconds'] / 60:.1f} min)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
