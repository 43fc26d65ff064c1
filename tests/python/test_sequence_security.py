"""Sequences and callers (Rampart's own, beyond Triton; docs/compatibility.md "Sequence batching",
docs/security.md): a sequence belongs to the client that started it, and the open sequences per model version
(`--max-sequences`) and per client (`--max-sequences-per-client`) are bounded.

One server (default engine, HTTP and gRPC) over the repository of test_sequences.py with
- two `--model-access` rules for the same models, `sequence_*`, with different keys (header `tenant`, values
  KEYS["alpha"] / KEYS["beta"]; gRPC metadata `triton-grpc-protocol-tenant`): both may call the models, but each
  is a different client (principal);
- `--max-sequences-per-client=2`, `--max-sequences=3`;
- the audit log in a file (a request into another client's sequence is a "denied" event).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import finish_server, grpc_base_args, start_server
from test_model_access import Audit, find
from test_sequences import (  # noqa: F401 - `proto` is a fixture
    ACC,
    DEFAULT_ENGINE,
    connect,
    proto,
    make_repo,
    next_id,
    no_start,
    refused,
    run_sequence,
    step,
)

NOBATCH = "sequence_nobatch"  # running sum from 100, no batch dimension
MAX_SEQUENCES = 3
MAX_PER_CLIENT = 2
KEYS = {"alpha": "alpha-K3y-7f3a", "beta": "beta-K3y-91cd"}  # tenant -> key value


def credential(proto: str, tenant: str) -> dict:
    """The tenant's key as tritonclient headers (gRPC: metadata triton-grpc-protocol-tenant)."""
    name = "tenant" if proto == "http" else "triton-grpc-protocol-tenant"
    return {name: KEYS[tenant]}


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sequence_audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, audit_path):
    repo = make_repo(tmp_path_factory.mktemp("sequence_security_repo"))
    extra = [
        *(f"--model-access=sequence_*:tenant={v}" for v in KEYS.values()),
        f"--max-sequences-per-client={MAX_PER_CLIENT}",
        f"--max-sequences={MAX_SEQUENCES}",
        f"--audit-log-file={audit_path}",
    ]
    srv = start_server(grpc_base_args(repo, DEFAULT_ENGINE, extra), "rampart[sequences, access]")
    yield srv
    finish_server(srv)


@pytest.fixture
def client(guarded, proto):
    c = connect(guarded, proto)
    yield c
    c.close()


class Opened:
    """Sequences a test opened (tenant None: anonymous); `close()` ends those still open, so that a failure does
    not hold places. `offset`: what the model adds to a START request's value (simple_sequence: START = 1)."""

    def __init__(self, client, proto, model, offset: int = 0):
        self.client, self.proto, self.model, self.offset, self.open = client, proto, model, offset, {}

    def headers(self, tenant):
        return credential(self.proto, tenant) if tenant else None

    def start(self, tenant, value: int = 1) -> int:
        seq_id = next_id()
        got = step(self.client, self.proto, self.model, value, seq_id, start=True, headers=self.headers(tenant))
        assert got == value + self.offset
        self.open[seq_id] = tenant
        return seq_id

    def end(self, seq_id: int) -> None:
        tenant = self.open.pop(seq_id)
        step(self.client, self.proto, self.model, 0, seq_id, end=True, headers=self.headers(tenant))

    def close(self) -> None:
        for seq_id in list(self.open):
            try:
                self.end(seq_id)
            except Exception:  # noqa: BLE001 - best effort; the test's own assertion reports the failure
                self.open.pop(seq_id, None)


def test_sequence_belongs_to_the_client_that_started_it(client, proto, audit_path):
    """alpha starts a sequence; beta (allowed on the model, another key) can neither continue, end nor restart
    it: HTTP 403 / PERMISSION_DENIED, audited as "denied" with the model and "sequence <id>". alpha's sequence
    goes on untouched; once it ended, beta may use the ID."""
    audit = Audit(audit_path)
    audit.mark()
    alpha, beta = credential(proto, "alpha"), credential(proto, "beta")
    kw = dict(batched=False)
    seq_id = next_id()
    assert step(client, proto, NOBATCH, 1, seq_id, start=True, headers=alpha, **kw) == 101
    for start, end in [(False, False), (False, True), (True, False)]:
        refused(proto, 403, lambda: step(client, proto, NOBATCH, 50, seq_id, start=start, end=end, headers=beta, **kw),
                contains=(f"sequence {seq_id}", NOBATCH, "was started by another client"))
    assert step(client, proto, NOBATCH, 2, seq_id, headers=alpha, **kw) == 103
    assert step(client, proto, NOBATCH, 3, seq_id, end=True, headers=alpha, **kw) == 106
    assert run_sequence(client, proto, NOBATCH, seq_id, [4, 5], headers=beta, **kw) == [104, 109]
    events = audit.since()
    denied = find(events, event="denied", model=NOBATCH, target=f"sequence {seq_id}")
    assert len(denied) == 3, events
    assert not [e for e in events for k in KEYS.values() if k in str(e)], "a key value reached the audit log"


def test_open_sequences_are_bounded(client, proto):
    """--max-sequences-per-client=2: alpha's third START is 503 / UNAVAILABLE while beta may still start one;
    --max-sequences=3: the fourth open sequence is refused whoever asks. A refused START opens nothing, and
    ending a sequence frees its place."""
    seqs = Opened(client, proto, ACC)
    alpha, beta = credential(proto, "alpha"), credential(proto, "beta")
    try:
        a1, a2 = seqs.start("alpha", 1), seqs.start("alpha", 2)
        other = next_id()
        refused(proto, 503, lambda: step(client, proto, ACC, 3, other, start=True, headers=alpha),
                contains=(f"model '{ACC}'", f"{MAX_PER_CLIENT} open sequences", "--max-sequences-per-client"))
        seqs.start("beta", 4)
        msg = refused(proto, 503, lambda: step(client, proto, ACC, 5, other, start=True, headers=beta),
                      contains=(f"model '{ACC}'", f"{MAX_SEQUENCES} open sequences", "--max-sequences"))
        assert "--max-sequences-per-client" not in msg, msg
        refused(proto, 400, lambda: step(client, proto, ACC, 6, other, end=True, headers=beta),
                exact=no_start(other, ACC))
        seqs.end(a1)
        a3 = seqs.start("alpha", 7)
        assert step(client, proto, ACC, 10, a2, headers=alpha) == 12
        assert step(client, proto, ACC, 10, a3, headers=alpha) == 17
    finally:
        seqs.close()


def test_anonymous_clients_share_one_count(client, proto):
    """`rampart --help`: "Open sequences one client (certificate or access key; anonymous clients share one
    count) may hold". simple_sequence is named by no --model-access rule, so its callers are anonymous: the
    third sequence they open is over --max-sequences-per-client=2."""
    seqs = Opened(client, proto, "simple_sequence", offset=1)
    try:
        seqs.start(None), seqs.start(None)
        third = next_id()
        seqs.open[third] = None  # ended by close() should the START be accepted
        refused(proto, 503, lambda: step(client, proto, "simple_sequence", 1, third, start=True),
                contains=("simple_sequence", "--max-sequences-per-client"))
    finally:
        seqs.close()
