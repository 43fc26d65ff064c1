"""Prometheus metrics (docs/protocol.md, "Metrics"): the `/metrics` listener (`--allow-metrics`,
`--metrics-address`, `--metrics-port`, `--metrics-interval-ms`, `--allow-cpu-metrics`, `--metrics-config`), the
text exposition (parsed line by line here), and per-model counters that must equal the statistics API
(docs/protocol.md, "Statistics") after known traffic. Also: the HTTP and gRPC statistics APIs agree with each other
and with the traffic sent, batch_stats included.

Every server here is started for one test (fresh counters, so totals are exact), on 127.0.0.1 with the metrics
port 0; the port actually bound is read from the "Started Metrics Service at <addr>:<port>" log line."""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import (
    HTTP_TIMEOUT,
    base_args,
    grpc_base_args,
    grpc_input,
    grpc_request,
    raw_bytes,
    concurrently,
    run_to_exit,
    running,
    simple_grpc_request,
)

METRICS_RE = re.compile(r"Started Metrics Service at (\S+):(\d+)")

# Families and their Prometheus types.
COUNT_FAMILIES = {
    "nv_inference_request_success": "counter",
    "nv_inference_request_failure": "counter",
    "nv_inference_count": "counter",
    "nv_inference_exec_count": "counter",
}
DURATION_FAMILIES = {
    "nv_inference_request_duration_us": "counter",
    "nv_inference_queue_duration_us": "counter",
    "nv_inference_compute_input_duration_us": "counter",
    "nv_inference_compute_infer_duration_us": "counter",
    "nv_inference_compute_output_duration_us": "counter",
}
GAUGE_FAMILIES = {
    "nv_inference_pending_request_count": "gauge",
    "nv_model_load_duration_secs": "gauge",
}
CACHE_FAMILIES = {
    "nv_cache_num_hits_per_model": "counter",
    "nv_cache_num_misses_per_model": "counter",
    "nv_cache_hit_duration_per_model": "counter",
    "nv_cache_miss_duration_per_model": "counter",
}
CPU_FAMILIES = {
    "nv_cpu_utilization": "gauge",
    "nv_cpu_memory_total_bytes": "gauge",
    "nv_cpu_memory_used_bytes": "gauge",
}
MODEL_FAMILIES = {**COUNT_FAMILIES, **DURATION_FAMILIES, **GAUGE_FAMILIES}
REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
EXAMPLE_MODELS = ("identity_bytes", "identity_fp32", "mlp", "simple")

# Duration counter -> inference_stats key of the statistics API (µs counter == ns // 1000).
DURATION_STAT = {
    "nv_inference_request_duration_us": "success",
    "nv_inference_queue_duration_us": "queue",
    "nv_inference_compute_input_duration_us": "compute_input",
    "nv_inference_compute_infer_duration_us": "compute_infer",
    "nv_inference_compute_output_duration_us": "compute_output",
}


# ---------------------------------------------------------------------------------------
# Exposition parser (Prometheus text format 0.0.4)
# ---------------------------------------------------------------------------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE_RE = re.compile(rf"^({METRIC_NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
LABEL_RE = re.compile(rf'({LABEL_NAME})="((?:[^"\\\n]|\\[\\"n])*)"')
HELP_RE = re.compile(rf"^# HELP ({METRIC_NAME}) (.*)$")
TYPE_RE = re.compile(rf"^# TYPE ({METRIC_NAME}) (counter|gauge|histogram|summary|untyped)$")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


@dataclass
class Family:
    name: str
    help: str | None = None
    type: str | None = None
    samples: dict = field(default_factory=dict)  # frozenset(labels.items()) -> float


@dataclass
class Exposition:
    text: str
    families: dict

    def value(self, family: str, **labels) -> float:
        """The value of the one sample of `family` whose labels are exactly `labels`."""
        assert family in self.families, f"family {family} missing; have {sorted(self.families)}"
        key = frozenset(labels.items())
        samples = self.families[family].samples
        assert key in samples, f"{family}{labels} missing; samples: {[dict(k) for k in samples]}"
        return samples[key]

    def count(self, family: str, **labels) -> int:
        """A counter value that must be a non-negative integer."""
        v = self.value(family, **labels)
        assert v >= 0 and v == int(v), f"{family}{labels} = {v} is not a non-negative integer"
        return int(v)

    def label_sets(self, family: str) -> set:
        return set(self.families[family].samples)

    def models(self) -> set:
        """Every (model, version) pair that appears in any sample."""
        out = set()
        for fam in self.families.values():
            for key in fam.samples:
                d = dict(key)
                if "model" in d:
                    out.add((d["model"], d.get("version")))
        return out


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def _parse_labels(text: str, line: str) -> dict:
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"bad label set at {text[pos:]!r} in line {line!r}"
        name, value = m.group(1), _unescape(m.group(2))
        assert name not in labels, f"label {name} repeated in line {line!r}"
        labels[name] = value
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", f"expected ',' after label {name} in line {line!r}"
            pos += 1
    return labels


def parse_exposition(text: str) -> Exposition:
    """Parse the whole body; every line must be a HELP, TYPE, comment or sample line. Per family: exactly one HELP
    and one TYPE, both before its first sample; the family's samples are contiguous; no duplicate series."""
    assert text.endswith("\n"), f"exposition must end with a newline: {text[-200:]!r}"
    families: dict[str, Family] = {}
    closed: set[str] = set()  # families whose sample block has ended
    current: str | None = None
    for line in text[:-1].split("\n"):
        assert line == line.strip() or line.startswith("# HELP "), f"stray whitespace in line {line!r}"
        if line == "":
            continue
        if line.startswith("#"):
            m = HELP_RE.match(line)
            if m:
                fam = families.setdefault(m.group(1), Family(m.group(1)))
                assert fam.help is None, f"second HELP line for {fam.name}: {line!r}"
                assert not fam.samples, f"HELP for {fam.name} after its samples"
                fam.help = m.group(2)
                continue
            if line.startswith("# TYPE"):
                m = TYPE_RE.match(line)
                assert m, f"malformed TYPE line {line!r}"
                fam = families.setdefault(m.group(1), Family(m.group(1)))
                assert fam.type is None, f"second TYPE line for {fam.name}: {line!r}"
                assert not fam.samples, f"TYPE for {fam.name} after its samples"
                fam.type = m.group(2)
                continue
            assert not line.startswith("# HELP"), f"malformed HELP line {line!r}"
            continue  # plain comment
        m = SAMPLE_RE.match(line)
        assert m, f"line is neither a comment nor a sample: {line!r}"
        name, label_text, raw_value = m.group(1), m.group(2) or "", m.group(3)
        family_name = name
        if name not in families:
            for fname, fam in families.items():
                if any(name == fname + s for s in SUFFIXES.get(fam.type or "", ())):
                    family_name = fname
        assert family_name in families, f"sample {name} before any HELP/TYPE line of its family: {line!r}"
        fam = families[family_name]
        assert fam.help is not None, f"sample of {family_name} before its HELP line"
        assert fam.type is not None, f"sample of {family_name} before its TYPE line"
        if current != family_name:
            assert family_name not in closed, f"samples of {family_name} are not contiguous: {line!r}"
            if current is not None:
                closed.add(current)
            current = family_name
        try:
            value = float(raw_value)
        except ValueError:
            raise AssertionError(f"bad sample value {raw_value!r} in line {line!r}")
        labels = _parse_labels(label_text, line)
        key = frozenset(labels.items()) if name == family_name else frozenset({**labels, "__name__": name}.items())
        assert key not in fam.samples, f"duplicate series in line {line!r}"
        fam.samples[key] = value
    for fam in families.values():
        assert fam.help is not None and fam.type is not None, f"{fam.name} lacks a HELP or TYPE line"
    return Exposition(text, families)


def test_parser_rejects_malformed_expositions():
    """The parser used by every other test catches what it claims to catch."""
    good = '# HELP a x\n# TYPE a counter\na{model="m",version="1"} 3\n'
    assert parse_exposition(good).count("a", model="m", version="1") == 3
    bad = [
        good.rstrip("\n"),  # no final newline
        'a{model="m"} 3\n',  # no HELP/TYPE
        '# TYPE a counter\na{model="m"} 3\n',  # no HELP
        '# HELP a x\na{model="m"} 3\n',  # no TYPE
        good + "# HELP a again\n",  # second HELP
        good + "# TYPE a gauge\n",  # second TYPE
        good + 'a{model="m",version="1"} 4\n',  # duplicate series
        good + "# HELP b y\n# TYPE b gauge\nb 1\n" + 'a{model="n",version="1"} 1\n',  # not contiguous
        '# HELP a x\n# TYPE a counter\na{model=m} 3\n',  # unquoted label value
        '# HELP a x\n# TYPE a counter\na{model="m"} three\n',  # bad value
        '# HELP a x\n# TYPE a thing\na 3\n',  # bad type
        "# HELP a x\n# TYPE a counter\na  3\n",  # two spaces
    ]
    for text in bad:
        with pytest.raises(AssertionError):
            parse_exposition(text)


# ---------------------------------------------------------------------------------------
# Server helpers
# ---------------------------------------------------------------------------------------


def metrics_args(args: list[str], *extra: str, address: bool = True) -> list[str]:
    """`args` (base_args / grpc_base_args) with metrics on 127.0.0.1 port 0 instead of --allow-metrics=false."""
    out = [a for a in args if a != "--allow-metrics=false"]
    assert len(out) == len(args) - 1, args
    if address:
        out.append("--metrics-address=127.0.0.1")
    return [*out, "--metrics-port=0", *extra]


def metrics_port(srv, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        m = METRICS_RE.search(srv.stderr_text())
        if m:
            assert m.group(1) == "127.0.0.1", m.group(0)
            return int(m.group(2))
        assert time.monotonic() < deadline, f"no 'Started Metrics Service at' line\n{srv.output()}"
        time.sleep(0.05)


@contextlib.contextmanager
def metrics_server(args: list[str], label: str, **kw):
    """`running`, with `.metrics_url` set when metrics are on."""
    with running(args, label, **kw) as srv:
        if "--allow-metrics=false" not in args:
            srv.metrics_url = f"http://127.0.0.1:{metrics_port(srv)}"
        yield srv


def scrape(srv, path: str = "/metrics") -> Exposition:
    r = requests.get(srv.metrics_url + path, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert r.headers.get("Content-Type") == "text/plain; charset=utf-8", r.headers
    return parse_exposition(r.text)


def stats(srv, model: str, version: str = "1") -> dict:
    r = srv.get(f"/v2/models/{model}/versions/{version}/stats")
    assert r.status_code == 200, r.text
    (entry,) = r.json()["model_stats"]
    return entry


def reserve_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def simple_body(a: int = 0, with_input1: bool = True) -> dict:
    inputs = [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [a + i for i in range(16)]}]
    if with_input1:
        inputs.append({"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16})
    return {"inputs": inputs}


def mlp_body(rows: int) -> dict:
    x = np.linspace(-1, 1, rows * 784, dtype=np.float32)
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 784], "data": x.tolist()}]}


def fp32_body(values: list[float]) -> dict:
    return {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, len(values)], "data": values}]}


def copy_models(examples_dir: Path, dest: Path, names, append: dict | None = None) -> Path:
    """Copy example models into `dest`; `append` maps a model name to text added to its config.pbtxt."""
    for name in names:
        shutil.copytree(examples_dir / name, dest / name)
        if append and name in append:
            cfg = dest / name / "config.pbtxt"
            cfg.write_text(cfg.read_text() + "\n" + append[name] + "\n")
    return dest


def assert_durations_match_stats(exp: Exposition, entry: dict, model: str) -> None:
    for fam, key in DURATION_STAT.items():
        ns = int(entry["inference_stats"][key]["ns"])
        got = exp.count(fam, model=model, version="1")
        assert got == ns // 1000, f"{fam}{{model={model}}} = {got}, statistics {key}.ns = {ns} (expected {ns // 1000})"


def assert_counts(exp: Exposition, model: str, success: int, inference: int, execution: int, **failures) -> None:
    got = {
        "success": exp.count("nv_inference_request_success", model=model, version="1"),
        "inference": exp.count("nv_inference_count", model=model, version="1"),
        "execution": exp.count("nv_inference_exec_count", model=model, version="1"),
        **{r: exp.count("nv_inference_request_failure", model=model, version="1", reason=r) for r in REASONS},
    }
    want = {"success": success, "inference": inference, "execution": execution, **{r: failures.get(r, 0) for r in REASONS}}
    assert got == want, f"{model}: metrics {got}, expected {want}"


# ---------------------------------------------------------------------------------------
# 1. Exposition format and exact values after known HTTP traffic
# ---------------------------------------------------------------------------------------


def test_exposition_and_counters_after_known_traffic(examples_dir):
    args = metrics_args(base_args(examples_dir), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics]") as srv:
        # Before any traffic: every served version has every series, all zero.
        exp0 = scrape(srv)
        for model in EXAMPLE_MODELS:
            assert_counts(exp0, model, 0, 0, 0)

        for i in range(7):
            r = srv.infer("simple", simple_body(i))
            assert r.status_code == 200, r.text
        r = srv.infer("mlp", mlp_body(4))
        assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [4, 10], r.text
        for _ in range(2):
            r = srv.infer("simple", simple_body(with_input1=False))
            assert r.status_code == 400 and "missing required input(s) ['INPUT1']" in r.text, r.text

        before = {m: stats(srv, m) for m in EXAMPLE_MODELS}
        exp = scrape(srv)
        after = {m: stats(srv, m) for m in EXAMPLE_MODELS}
        assert before == after, "statistics moved without traffic"

        # Exactly the documented families, each with its type.
        got_types = {name: fam.type for name, fam in exp.families.items()}
        assert got_types == MODEL_FAMILIES, f"families/types: {got_types}"
        for name, fam in exp.families.items():
            assert fam.help, f"{name} has an empty HELP text"
        # Exactly one series per served version (four per version for the failure counter).
        versions = {(m, "1") for m in EXAMPLE_MODELS}
        for name in MODEL_FAMILIES:
            want = {frozenset({"model": m, "version": v}.items()) for m, v in versions}
            if name == "nv_inference_request_failure":
                want = {frozenset({"model": m, "version": v, "reason": r}.items()) for m, v in versions for r in REASONS}
            assert exp.label_sets(name) == want, f"{name}: series {[dict(k) for k in exp.label_sets(name)]}"

        assert_counts(exp, "simple", success=7, inference=7, execution=7, OTHER=2)
        # Triton's tests match the failure series as text: labels in name order.
        page = requests.get(srv.metrics_url + "/metrics", timeout=HTTP_TIMEOUT).text
        assert 'nv_inference_request_failure{model="simple",reason="OTHER",version="1"} 2' in page.splitlines()
        assert_counts(exp, "mlp", success=1, inference=4, execution=1)
        assert_counts(exp, "identity_fp32", 0, 0, 0)
        assert_counts(exp, "identity_bytes", 0, 0, 0)

        # The same numbers as the statistics API.
        for model in EXAMPLE_MODELS:
            e = after[model]
            assert exp.count("nv_inference_request_success", model=model, version="1") == e["inference_stats"]["success"]["count"]
            assert exp.count("nv_inference_count", model=model, version="1") == e["inference_count"]
            assert exp.count("nv_inference_exec_count", model=model, version="1") == e["execution_count"]
            failures = sum(exp.count("nv_inference_request_failure", model=model, version="1", reason=r) for r in REASONS)
            assert failures == e["inference_stats"]["fail"]["count"], (model, failures, e["inference_stats"]["fail"])
            assert_durations_match_stats(exp, e, model)
        assert after["simple"]["inference_stats"]["success"]["count"] == 7
        assert after["simple"]["inference_stats"]["fail"]["count"] == 2

        # Durations: positive where work was done, zero elsewhere, end-to-end >= its parts.
        for model in ("simple", "mlp"):
            total = exp.count("nv_inference_request_duration_us", model=model, version="1")
            parts = sum(
                exp.count(f, model=model, version="1") for f in DURATION_FAMILIES if f != "nv_inference_request_duration_us"
            )
            assert total > 0 and total >= parts, (model, total, parts)
            assert exp.count("nv_inference_compute_infer_duration_us", model=model, version="1") > 0
        for model in ("identity_fp32", "identity_bytes"):
            for fam in DURATION_FAMILIES:
                assert exp.count(fam, model=model, version="1") == 0, (fam, model)

        for model in EXAMPLE_MODELS:
            assert exp.value("nv_inference_pending_request_count", model=model, version="1") == 0
            load = exp.value("nv_model_load_duration_secs", model=model, version="1")
            assert 0 < load < 60, (model, load)

        # Counters only move with traffic: a second scrape is identical (CPU gauges are off here).
        assert scrape(srv).families == exp.families


# ---------------------------------------------------------------------------------------
# 2. --metrics-config counter_latencies=false; --metrics-address defaults to --http-address
# ---------------------------------------------------------------------------------------


def test_counter_latencies_false_drops_duration_counters(examples_dir):
    args = metrics_args(
        base_args(examples_dir),
        "--allow-cpu-metrics=false",
        "--metrics-config=counter_latencies=false",
        address=False,  # defaults to --http-address (127.0.0.1, checked by metrics_port)
    )
    with metrics_server(args, "rampart[metrics, no latency counters]") as srv:
        for i in range(3):
            assert srv.infer("simple", simple_body(i)).status_code == 200
        assert srv.infer("simple", simple_body(with_input1=False)).status_code == 400
        exp = scrape(srv)
        got_types = {name: fam.type for name, fam in exp.families.items()}
        assert got_types == {**COUNT_FAMILIES, **GAUGE_FAMILIES}, got_types
        assert_counts(exp, "simple", success=3, inference=3, execution=3, OTHER=1)
        assert_counts(exp, "mlp", 0, 0, 0)
        assert exp.value("nv_model_load_duration_secs", model="simple", version="1") > 0


def test_counter_latencies_true_is_the_default(examples_dir):
    args = metrics_args(base_args(examples_dir), "--allow-cpu-metrics=false", "--metrics-config=counter_latencies=true")
    with metrics_server(args, "rampart[metrics, counter_latencies=true]") as srv:
        assert set(scrape(srv).families) == set(MODEL_FAMILIES)


# ---------------------------------------------------------------------------------------
# 3. Response cache metrics
# ---------------------------------------------------------------------------------------


@pytest.fixture
def cache_repo(examples_dir, tmp_path) -> Path:
    """identity_fp32 with response_cache enabled; simple and mlp without."""
    return copy_models(
        examples_dir, tmp_path, ("identity_fp32", "simple", "mlp"), {"identity_fp32": "response_cache { enable: true }"}
    )


def test_cache_hits_and_misses(cache_repo):
    args = metrics_args(base_args(cache_repo, extra=["--cache-config=local,size=1048576"]), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics, cache]") as srv:
        for _ in range(3):
            r = srv.infer("identity_fp32", fp32_body([1.5, 2.5, 3.5]))
            assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1.5, 2.5, 3.5], r.text
        entry = stats(srv, "identity_fp32")
        exp = scrape(srv)
        for name, kind in CACHE_FAMILIES.items():
            assert exp.families.get(name) is not None and exp.families[name].type == kind, (name, sorted(exp.families))
        assert exp.count("nv_cache_num_hits_per_model", model="identity_fp32", version="1") == 2
        assert exp.count("nv_cache_num_misses_per_model", model="identity_fp32", version="1") == 1
        i = entry["inference_stats"]
        assert (i["cache_hit"]["count"], i["cache_miss"]["count"]) == (2, 1), i
        hit_us = exp.count("nv_cache_hit_duration_per_model", model="identity_fp32", version="1")
        miss_us = exp.count("nv_cache_miss_duration_per_model", model="identity_fp32", version="1")
        assert hit_us == int(i["cache_hit"]["ns"]) // 1000, (hit_us, i["cache_hit"])
        assert miss_us == int(i["cache_miss"]["ns"]) // 1000, (miss_us, i["cache_miss"])
        # Hits are successes but neither inferences nor executions.
        assert_counts(exp, "identity_fp32", success=3, inference=1, execution=1)
        assert_durations_match_stats(exp, entry, "identity_fp32")


def test_cache_series_only_for_models_with_response_cache(cache_repo):
    """As in Triton (MetricModelReporter creates the cache counters only when the model's response cache is
    enabled): models without `response_cache { enable: true }` get no nv_cache_* series."""
    args = metrics_args(base_args(cache_repo, extra=["--cache-config=local,size=1048576"]), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics, cache]") as srv:
        exp = scrape(srv)
        for name in CACHE_FAMILIES:
            models = {dict(k)["model"] for k in exp.label_sets(name)}
            assert models == {"identity_fp32"}, f"{name} has series for {sorted(models)}"


def test_no_cache_metrics_without_a_server_cache(cache_repo):
    args = metrics_args(base_args(cache_repo), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics, no cache]") as srv:
        for _ in range(2):
            assert srv.infer("identity_fp32", fp32_body([4.0])).status_code == 200
        exp = scrape(srv)
        present = [n for n in exp.families if n.startswith("nv_cache")]
        assert present == [], present
        assert_counts(exp, "identity_fp32", success=2, inference=2, execution=2)


# ---------------------------------------------------------------------------------------
# 4. CPU / memory gauges
# ---------------------------------------------------------------------------------------


def _meminfo_bytes(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{key} not in /proc/meminfo")


def test_cpu_gauges_appear_after_the_first_interval(examples_dir):
    args = metrics_args(base_args(examples_dir), "--metrics-interval-ms=100")
    with metrics_server(args, "rampart[metrics, cpu 100ms]") as srv:
        deadline = time.monotonic() + 5
        while True:
            exp = scrape(srv)
            if all(n in exp.families for n in CPU_FAMILIES):
                break
            assert time.monotonic() < deadline, f"CPU gauges missing after 5 s: {sorted(exp.families)}"
            time.sleep(0.1)
        for name, kind in CPU_FAMILIES.items():
            fam = exp.families[name]
            assert fam.type == kind and list(fam.samples) == [frozenset()], (name, fam)
        util = exp.value("nv_cpu_utilization")
        total = exp.value("nv_cpu_memory_total_bytes")
        used = exp.value("nv_cpu_memory_used_bytes")
        assert 0.0 <= util <= 1.0 and not math.isnan(util), util
        assert total == _meminfo_bytes("MemTotal"), (total, _meminfo_bytes("MemTotal"))
        assert 0 < used <= total, (used, total)
        expected_used = _meminfo_bytes("MemTotal") - _meminfo_bytes("MemAvailable")
        assert abs(used - expected_used) <= 0.1 * total, f"used {used}, MemTotal - MemAvailable = {expected_used}"
        # The per-model families are there as well.
        assert set(MODEL_FAMILIES) <= set(exp.families)


def test_no_cpu_gauges_with_allow_cpu_metrics_false(examples_dir):
    args = metrics_args(base_args(examples_dir), "--metrics-interval-ms=100", "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics, no cpu]") as srv:
        time.sleep(0.6)  # six sampling intervals
        exp = scrape(srv)
        assert not [n for n in exp.families if n.startswith("nv_cpu")], sorted(exp.families)
        assert set(exp.families) == set(MODEL_FAMILIES)


# ---------------------------------------------------------------------------------------
# 5. Only /metrics answers; never restricted
# ---------------------------------------------------------------------------------------


def test_only_metrics_path_answers(examples_dir):
    args = metrics_args(base_args(examples_dir), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics paths]") as srv:
        a, b = scrape(srv, "/metrics"), scrape(srv, "/metrics/")
        assert a.families == b.families
        for path in ("/", "/metric", "/metricsx", "/metrics/x", "/v2/health/live", "/v2", "/v2/models/simple/stats"):
            r = requests.get(srv.metrics_url + path, timeout=HTTP_TIMEOUT)
            assert r.status_code == 404, (path, r.status_code, r.text[:200])
        for method in ("POST", "PUT", "DELETE"):
            r = requests.request(method, srv.metrics_url + "/metrics", data=b"x", timeout=HTTP_TIMEOUT)
            assert r.status_code == 405, (method, r.status_code, r.text[:200])
        # The HTTP API port does not serve the exposition.
        r = srv.get("/metrics")
        assert (r.status_code, r.text) == (404, '{"error":"Not Found"}'), (r.status_code, r.text[:200])


def test_metrics_port_is_never_restricted(examples_dir):
    restrict = (
        "--http-restricted-api=health,metadata,inference,shared-memory,model-config,"
        "model-repository,statistics,trace,logging:k=v"
    )
    args = metrics_args(base_args(examples_dir, extra=[restrict]), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics, restricted]", health_headers={"k": "v"}) as srv:
        # The restriction is in force on the HTTP port...
        assert srv.get("/v2/models/simple/stats").status_code == 403
        assert srv.infer("simple", simple_body(1)).status_code == 403
        assert srv.infer("simple", simple_body(1), headers={"k": "v"}).status_code == 200
        # ...but the metrics port answers without credentials (and the denied request counted nothing).
        exp = scrape(srv)
        assert_counts(exp, "simple", success=1, inference=1, execution=1)


# ---------------------------------------------------------------------------------------
# 6. --allow-metrics=false
# ---------------------------------------------------------------------------------------


def test_allow_metrics_false_listens_nowhere(examples_dir):
    port = reserve_port()
    args = [*base_args(examples_dir), "--metrics-address=127.0.0.1", f"--metrics-port={port}"]
    assert "--allow-metrics=false" in args
    with metrics_server(args, "rampart[metrics off]") as srv:
        assert srv.infer("simple", simple_body()).status_code == 200
        time.sleep(0.3)
        assert "Started Metrics Service" not in srv.stderr_text() + srv.stdout_text()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_latency_summaries_and_first_response_histogram(examples_dir):
    args = metrics_args(
        base_args(examples_dir),
        "--metrics-config=summary_latencies=true",
        "--metrics-config=summary_quantiles=0.5:0.05,0.99:0.001",
        "--metrics-config=histogram_latencies=true",
    )
    with metrics_server(args, "rampart[summaries]") as srv:
        idle = scrape(srv)
        assert idle.families["nv_inference_request_summary_us"].type == "summary"
        assert math.isnan(idle.value("nv_inference_request_summary_us", model="simple", version="1", quantile="0.5")), "no samples yet"
        n = 5
        for i in range(n):
            assert srv.infer("simple", simple_body(i)).status_code == 200
        e = scrape(srv)
        stats = srv.get("/v2/models/simple/versions/1/stats").json()["model_stats"][0]["inference_stats"]
        for family, stat in [
            ("nv_inference_request_summary_us", "success"),
            ("nv_inference_queue_summary_us", "queue"),
            ("nv_inference_compute_infer_summary_us", "compute_infer"),
        ]:
            labels = {"model": "simple", "version": "1"}
            quantiles = {dict(k)["quantile"] for k in e.label_sets(family) if dict(k).get("model") == "simple" and "quantile" in dict(k)}
            assert quantiles == {"0.5", "0.99"}, quantiles
            q50 = e.value(family, **labels, quantile="0.5")
            q99 = e.value(family, **labels, quantile="0.99")
            assert 0 <= q50 <= q99, (family, q50, q99)
            assert e.value(family, **labels, __name__=family + "_count") == n
            assert e.value(family, **labels, __name__=family + "_sum") == int(stats[stat]["ns"]) // 1000
            if stat == "success":
                assert 0 < q99 <= int(stats[stat]["ns"]) // 1000, "a quantile is one of the samples"
        h = "nv_inference_first_response_histogram_ms"
        assert e.families[h].type == "histogram"
        labels = {"model": "simple", "version": "1"}
        buckets = [e.value(h, **labels, le=le, __name__=h + "_bucket") for le in ("100", "500", "2000", "5000", "+Inf")]
        assert buckets == sorted(buckets) and buckets[-1] == n, buckets
        assert e.value(h, **labels, __name__=h + "_count") == n
        assert 0 < e.value(h, **labels, __name__=h + "_sum") == pytest.approx(int(stats["success"]["ns"]) / 1e6, abs=0.01)


def test_no_summaries_or_histogram_by_default(examples_dir):
    with metrics_server(metrics_args(base_args(examples_dir)), "rampart[no summaries]") as srv:
        assert srv.infer("simple", simple_body()).status_code == 200
        families = set(scrape(srv).families)
        assert not {f for f in families if f.endswith("_summary_us") or "histogram" in f}, families


# ---------------------------------------------------------------------------------------
# 7. Startup refusals
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting,message",
    [
        ("summary_quantiles=2:0.1", "summary_quantiles: expected <quantile>:<error>"),
        ("summary_max_age=0", "summary_max_age: seconds in 1..=86400"),
        ("histogram_latencies=maybe", "--metrics-config histogram_latencies"),
        ("foo=bar", "--metrics-config: unknown setting 'foo'"),
    ],
)
def test_unsupported_metrics_config_is_refused(examples_dir, setting, message):
    proc = run_to_exit(metrics_args(base_args(examples_dir), f"--metrics-config={setting}"))
    out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode == 1, out[-2000:]
    assert message in out, out[-2000:]
    assert "Started HTTPService" not in out and "Started Metrics Service" not in out


def test_metrics_port_equal_to_http_port_is_refused(examples_dir):
    port = reserve_port()
    args = [a for a in base_args(examples_dir) if a not in ("--allow-metrics=false", "--http-port=0")]
    proc = run_to_exit([*args, f"--http-port={port}", "--metrics-address=127.0.0.1", f"--metrics-port={port}"])
    out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode == 1, out[-2000:]
    assert f"The server cannot listen to metrics requests and HTTP requests at the same port {port}" in out, out[-2000:]


# ---------------------------------------------------------------------------------------
# 8. REJECTED failures (queue timeout, full queue); pending gauge
# ---------------------------------------------------------------------------------------


@pytest.fixture
def queue_repo(examples_dir, tmp_path) -> Path:
    policies = {
        "reject_1us": "dynamic_batching { default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 1 } }",
        # A queue that holds one request: concurrent requests arriving while the instance executes are refused.
        "bounded": "dynamic_batching { default_queue_policy { max_queue_size: 1 } }",
        "slow": "dynamic_batching { max_queue_delay_microseconds: 1000000 preferred_batch_size: [ 32 ] }",
    }
    for name, text in policies.items():
        shutil.copytree(examples_dir / "mlp", tmp_path / name)
        cfg = tmp_path / name / "config.pbtxt"
        cfg.write_text(cfg.read_text().replace('name: "mlp"', f'name: "{name}"') + "\n" + text + "\n")
    return tmp_path


def test_queue_timeout_counts_as_rejected(queue_repo):
    args = metrics_args(base_args(queue_repo), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics, queue timeout]") as srv:
        for _ in range(3):
            r = srv.infer("reject_1us", mlp_body(1))
            assert r.status_code == 503 and r.json() == {"error": "Request timeout expired"}, r.text
        exp = scrape(srv)
        assert_counts(exp, "reject_1us", success=0, inference=0, execution=0, REJECTED=3)
        assert stats(srv, "reject_1us")["inference_stats"]["fail"]["count"] == 3


def test_full_queue_counts_as_rejected(queue_repo):
    args = metrics_args(base_args(queue_repo), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics, bounded queue]") as srv:
        body = json.dumps(mlp_body(32)).encode()
        codes: list[int] = []
        for _ in range(20):  # bursts of 16 concurrent full batches until the queue of one overflows
            results = concurrently(lambda i: srv.infer("bounded", body), 16)
            for r in results:
                # Which of the concurrent requests find the queue of one full depends on thread timing: each is
                # either served or refused with 503 "Exceeds maximum queue size", never anything else.
                assert r.status_code in (200, 503), (r.status_code, r.text[:200])
                if r.status_code == 503:
                    assert r.json() == {"error": "Exceeds maximum queue size"}, r.text
                codes.append(r.status_code)
            if 503 in codes:
                break
        ok, rejected = codes.count(200), codes.count(503)
        assert rejected >= 1, f"{len(codes)} concurrent requests into a queue of one: none refused"
        entry = stats(srv, "bounded")
        exp = scrape(srv)
        assert_counts(exp, "bounded", success=ok, inference=32 * ok, execution=entry["execution_count"], REJECTED=rejected)
        assert entry["inference_stats"]["fail"]["count"] == rejected


def test_pending_gauge_counts_requests_waiting_for_a_batch(queue_repo):
    """Triton: the pending count goes up when a request is enqueued and down when an instance starts executing it,
    so requests held by the dynamic batcher for `max_queue_delay_microseconds` are pending."""
    args = metrics_args(base_args(queue_repo), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics, pending]") as srv:
        done = []
        seen = []

        def one(i):
            r = srv.infer("slow", mlp_body(1))
            done.append(time.monotonic())
            return r

        threads = [threading.Thread(target=lambda i=i: one(i)) for i in range(4)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        while not done and time.monotonic() - t0 < 0.8:
            exp = scrape(srv)
            seen.append(exp.value("nv_inference_pending_request_count", model="slow", version="1"))
            if seen[-1] == 4:
                break
            time.sleep(0.05)
        for t in threads:
            t.join(30)
        assert len(done) == 4
        assert min(done) - t0 >= 0.5, "the batch was not held for the queue delay; the test cannot observe pending"
        assert 4 in seen, f"pending gauge while 4 requests waited for a batch: {seen}"
        assert scrape(srv).value("nv_inference_pending_request_count", model="slow", version="1") == 0
        queue_ns = stats(srv, "slow")["inference_stats"]["queue"]["ns"]
        assert queue_ns >= 4 * 500_000_000, queue_ns


# ---------------------------------------------------------------------------------------
# 9. gRPC traffic
# ---------------------------------------------------------------------------------------


def test_grpc_traffic_counts_the_same(examples_dir):
    import grpc
    from tritonclient.grpc import service_pb2

    args = metrics_args(grpc_base_args(examples_dir), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[metrics, grpc]") as srv:
        stub = srv.grpc_stub()
        for _ in range(5):
            stub.ModelInfer(simple_grpc_request())
        x = np.ones((3, 784), dtype=np.float32)
        stub.ModelInfer(grpc_request("mlp", [grpc_input("input", "FP32", x.shape)], [raw_bytes(x, "FP32")]))
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        missing = grpc_request("simple", [grpc_input("INPUT0", "INT32", a.shape)], [raw_bytes(a, "INT32")])
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(missing)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value

        gstats = {
            m: stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name=m, version="1")).model_stats[0]
            for m in ("simple", "mlp")
        }
        exp = scrape(srv)
        assert_counts(exp, "simple", success=5, inference=5, execution=5, OTHER=2)
        assert_counts(exp, "mlp", success=1, inference=3, execution=1)
        for model, g in gstats.items():
            assert exp.count("nv_inference_request_success", model=model, version="1") == g.inference_stats.success.count
            assert exp.count("nv_inference_count", model=model, version="1") == g.inference_count
            assert exp.count("nv_inference_exec_count", model=model, version="1") == g.execution_count
            for fam, key in DURATION_STAT.items():
                assert exp.count(fam, model=model, version="1") == getattr(g.inference_stats, key).ns // 1000, (model, fam)


# ---------------------------------------------------------------------------------------
# 10. Explicit model control: unload removes the series, reload starts from zero
# ---------------------------------------------------------------------------------------


def test_unload_removes_the_model_series(examples_dir, tmp_path):
    repo = copy_models(examples_dir, tmp_path, ("simple", "identity_fp32"))
    args = metrics_args(
        base_args(repo, extra=["--model-control-mode=explicit", "--load-model=simple", "--load-model=identity_fp32"]),
        "--allow-cpu-metrics=false",
    )
    with metrics_server(args, "rampart[metrics, explicit]") as srv:
        for i in range(2):
            assert srv.infer("simple", simple_body(i)).status_code == 200
        assert srv.infer("identity_fp32", fp32_body([1.0])).status_code == 200
        exp = scrape(srv)
        assert exp.models() == {("simple", "1"), ("identity_fp32", "1")}
        assert_counts(exp, "simple", success=2, inference=2, execution=2)

        r = srv.post("/v2/repository/models/simple/unload")
        assert r.status_code == 200, r.text
        exp = scrape(srv)
        assert exp.models() == {("identity_fp32", "1")}, exp.models()
        assert_counts(exp, "identity_fp32", success=1, inference=1, execution=1)
        assert "model=\"simple\"" not in exp.text

        r = srv.post("/v2/repository/models/simple/load")
        assert r.status_code == 200, r.text
        exp = scrape(srv)
        assert exp.models() == {("simple", "1"), ("identity_fp32", "1")}
        assert_counts(exp, "simple", 0, 0, 0)
        for fam in DURATION_FAMILIES:
            assert exp.count(fam, model="simple", version="1") == 0, fam
        assert exp.value("nv_model_load_duration_secs", model="simple", version="1") > 0
        assert srv.infer("simple", simple_body()).status_code == 200
        assert_counts(scrape(srv), "simple", success=1, inference=1, execution=1)


# ---------------------------------------------------------------------------------------
# Statistics API: HTTP and gRPC agree with each other and with the traffic, batch_stats per batch size
# ---------------------------------------------------------------------------------------


def test_http_and_grpc_statistics_agree_with_traffic(examples_dir):
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2

    args = metrics_args(grpc_base_args(examples_dir), "--allow-cpu-metrics=false")
    with metrics_server(args, "rampart[stats, http+grpc]") as srv:
        http_batches = [1, 2, 2, 3]
        grpc_batches = [1, 3, 5]
        for b in http_batches:
            body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [b, 4], "data": [float(b)] * (4 * b)}]}
            r = srv.infer("identity_fp32", body)
            assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [b, 4], r.text
        client = srv.grpc_client()
        try:
            for b in grpc_batches:
                inp = grpcclient.InferInput("INPUT0", [b, 4], "FP32")
                inp.set_data_from_numpy(np.full((b, 4), b, dtype=np.float32))
                assert client.infer("identity_fp32", [inp]).as_numpy("OUTPUT0").shape == (b, 4)
        finally:
            client.close()
        # One failure (batch 9 > max_batch_size 8) over HTTP.
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [9, 1], "data": [0.0] * 9}]}
        assert srv.infer("identity_fp32", body).status_code == 400

        h = stats(srv, "identity_fp32")
        g = srv.grpc_stub().ModelStatistics(service_pb2.ModelStatisticsRequest(name="identity_fp32", version="1"))
        assert len(g.model_stats) == 1
        g = g.model_stats[0]
        exp = scrape(srv)

        batches = http_batches + grpc_batches
        assert (g.name, g.version) == (h["name"], h["version"]) == ("identity_fp32", "1")
        assert h["inference_count"] == g.inference_count == sum(batches)
        assert h["execution_count"] == g.execution_count == len(batches)  # no dynamic batching: one execution each
        assert h["last_inference"] == g.last_inference > 0
        for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss"):
            hv, gv = h["inference_stats"][key], getattr(g.inference_stats, key)
            assert (hv["count"], hv["ns"]) == (gv.count, gv.ns), (key, hv, gv)
        i = h["inference_stats"]
        assert i["success"]["count"] == len(batches) and i["fail"]["count"] == 1
        for key in ("queue", "compute_input", "compute_infer", "compute_output"):
            assert i[key]["count"] == len(batches), (key, i[key])
        assert i["cache_hit"]["count"] == i["cache_miss"]["count"] == 0

        def batch_table(entries):
            return {
                int(e["batch_size"]): {k: (int(e[k]["count"]), int(e[k]["ns"])) for k in ("compute_input", "compute_infer", "compute_output")}
                for e in entries
            }

        hb = batch_table(h["batch_stats"])
        gb = {
            b.batch_size: {k: (getattr(b, k).count, getattr(b, k).ns) for k in ("compute_input", "compute_infer", "compute_output")}
            for b in g.batch_stats
        }
        assert len(h["batch_stats"]) == len(hb), "batch_stats lists a batch size twice"
        assert hb == gb, (hb, gb)
        want = {b: batches.count(b) for b in set(batches)}
        assert {b: v["compute_infer"][0] for b, v in hb.items()} == want, hb
        for b, v in hb.items():
            assert v["compute_input"][0] == v["compute_output"][0] == want[b], (b, v)
        # Sum over batch sizes of compute_infer ns == the model's compute_infer ns.
        assert sum(v["compute_infer"][1] for v in hb.values()) == i["compute_infer"]["ns"], (hb, i["compute_infer"])

        # And the metrics agree too.
        assert_counts(exp, "identity_fp32", success=len(batches), inference=sum(batches), execution=len(batches), OTHER=1)
        assert_durations_match_stats(exp, h, "identity_fp32")
