"""Cloud model repositories: `s3://host:port/bucket/path` against a moto S3 server started on 127.0.0.1 by
the test. The server mirrors the bucket before loading, serves from the mirror, follows the bucket in poll
mode (added, changed, removed models), and never writes outside its mirror whatever the object keys say.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import RampartServer, ServerStartError, assert_error, base_args, example_repo, require_binary

boto3 = pytest.importorskip("boto3")

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "rampart-test",
    "AWS_SECRET_ACCESS_KEY": "rampart-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int, what: str, timeout: float) -> str:
    """Waits until the emulator `proc` answers HTTP on 127.0.0.1:`port`; its URL."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=1)
            return url
        except requests.RequestException:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"{what} did not start")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and a boto3 client for it."""
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = wait_listening(proc, port, "moto_server", 30)
    client = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    yield port, client
    proc.terminate()
    proc.wait(timeout=10)


def upload(client, bucket: str, prefix: str, model_dir: Path, name: str | None = None) -> None:
    name = name or model_dir.name
    for f in model_dir.rglob("*"):
        if f.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{name}/{f.relative_to(model_dir).as_posix()}", Body=f.read_bytes())


def delete_model(client, bucket: str, prefix: str, name: str) -> None:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{name}/")
    for o in listed.get("Contents", []):
        client.delete_object(Bucket=bucket, Key=o["Key"])


def start(port: int, location: str, extra=(), env_extra=None, wait="ready") -> RampartServer:
    env = dict(os.environ, **CREDENTIALS, **(env_extra or {}))
    srv = RampartServer(base_args(f"s3://127.0.0.1:{port}/{location}", extra=list(extra)), label="s3")
    old = os.environ.copy()
    os.environ.update(env)
    try:
        return srv.start(wait=wait)
    finally:
        os.environ.clear()
        os.environ.update(old)


SIMPLE_BODY = {
    "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
    ]
}


def test_s3_repository_serves_models(s3):
    port, client = s3
    client.create_bucket(Bucket="serve")
    upload(client, "serve", "repo/models", example_repo() / "simple")
    upload(client, "serve", "repo/models", example_repo() / "identity_fp32")
    srv = start(port, "serve/repo/models")
    try:
        index = {e["name"]: e.get("state") for e in srv.index()}
        assert index == {"simple": "READY", "identity_fp32": "READY"}, index
        r = srv.infer("simple", SIMPLE_BODY)
        assert r.status_code == 200, r.text
        out = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert out["OUTPUT0"] == [i + 1 for i in range(16)]
        mirror = re.search(r"mirrored to '([^']+)'", srv.stderr_text())
        assert mirror, srv.stderr_text()
        mirror_dir = Path(mirror.group(1))
        assert (mirror_dir / "simple" / "config.pbtxt").is_file()
        assert oct(mirror_dir.stat().st_mode & 0o777) == "0o700", "the mirror is private"
    finally:
        srv.stop()
    assert not mirror_dir.exists(), "the mirror is removed at exit"


def test_s3_poll_follows_the_bucket(s3, tmp_path):
    port, client = s3
    client.create_bucket(Bucket="poll")
    upload(client, "poll", "m", example_repo() / "simple")
    srv = start(port, "poll/m", extra=["--model-control-mode=poll", "--repository-poll-secs=1"])

    def wait_for(what, check, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"{what}: index {srv.index()}\n{srv.output(60)}")

    try:
        assert srv.infer("simple", SIMPLE_BODY).status_code == 200
        # Added model.
        upload(client, "poll", "m", example_repo() / "identity_fp32")
        wait_for("identity_fp32 appears", lambda: any(e["name"] == "identity_fp32" and e.get("state") == "READY" for e in srv.index()))
        # Changed config: max_batch_size 8 -> 4.
        cfg = (example_repo() / "simple" / "config.pbtxt").read_text().replace("max_batch_size: 8", "max_batch_size: 4")
        assert "max_batch_size: 4" in cfg
        client.put_object(Bucket="poll", Key="m/simple/config.pbtxt", Body=cfg.encode())
        wait_for("simple reloads", lambda: srv.get("/v2/models/simple/config").json().get("max_batch_size") == 4)
        assert srv.infer("simple", SIMPLE_BODY).status_code == 200
        # Removed model.
        delete_model(client, "poll", "m", "identity_fp32")
        wait_for(
            "identity_fp32 unloads",
            lambda: any(e["name"] == "identity_fp32" and e.get("state") == "UNAVAILABLE" for e in srv.index()),
        )
        assert_error(srv.get("/v2/models/identity_fp32/ready"), 400, exact="Model version not ready")
        assert srv.infer("simple", SIMPLE_BODY).status_code == 200
    finally:
        srv.stop()


def test_s3_keys_cannot_escape_the_mirror(s3, tmp_path):
    """Object keys are paths chosen by whoever writes the bucket: none may land outside the mirror."""
    port, client = s3
    client.create_bucket(Bucket="hostile")
    upload(client, "hostile", "r", example_repo() / "simple")
    marker = f"rampart-escape-{os.getpid()}"
    for key in (f"r/../{marker}", f"r/simple/../../../{marker}", f"r/simple/1/..%2F..%2F{marker}"):
        client.put_object(Bucket="hostile", Key=key, Body=b"escaped")
    try:
        srv = start(port, "hostile/r")
    except ServerStartError as e:
        # Refusing the bucket is acceptable; writing outside the mirror is not.
        assert "model repository" in str(e), str(e)[-2000:]
        srv = None
    try:
        if srv is not None:
            assert srv.infer("simple", SIMPLE_BODY).status_code == 200, srv.output(40)
        import tempfile

        for root in (Path(tempfile.gettempdir()), Path("/tmp"), Path("/"), Path.cwd()):
            assert not (root / marker).exists(), root / marker
    finally:
        if srv is not None:
            srv.stop()


def test_unreachable_store_fails_startup_clearly():
    port = free_port()  # nothing listens here
    srv = RampartServer(base_args(f"s3://127.0.0.1:{port}/nobucket/models"), label="s3-down")
    old = os.environ.copy()
    os.environ.update(CREDENTIALS)
    os.environ["AWS_RETRY_TIMEOUT"] = "1"
    try:
        proc = subprocess.run([str(require_binary()), *srv.args], capture_output=True, text=True, timeout=120)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert proc.returncode == 1
    assert f"s3://127.0.0.1:{port}/nobucket/models" in proc.stderr, proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------
# Azure Blob Storage (as://) against Azurite, installed by scripts/install-azurite.sh
# ---------------------------------------------------------------------------------------

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    from conftest import REPO_ROOT

    binary = REPO_ROOT / "third_party" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        pytest.fail(f"{binary} missing: run scripts/install-azurite.sh", pytrace=False)
    blob_service = pytest.importorskip("azure.storage.blob").BlobServiceClient
    port = free_port()
    data = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data), "--skipApiVersionCheck", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = wait_listening(proc, port, "azurite", 60)
    conn = f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={url}/{AZURITE_ACCOUNT};"
    yield url, blob_service.from_connection_string(conn)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # Azurite waits for idle client connections on SIGTERM
        proc.kill()
        proc.wait(timeout=10)


def azure_upload(container, prefix: str, model_dir: Path) -> None:
    for f in model_dir.rglob("*"):
        if f.is_file():
            container.upload_blob(f"{prefix}/{model_dir.name}/{f.relative_to(model_dir).as_posix()}", f.read_bytes(), overwrite=True)


def test_azure_repository_serves_and_follows_models(azurite):
    url, service = azurite
    container = service.create_container("models")
    azure_upload(container, "repo", example_repo() / "simple")
    env = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": url}
    old = os.environ.copy()
    os.environ.update(env)
    try:
        srv = RampartServer(
            base_args(f"as://{AZURITE_ACCOUNT}/models/repo", extra=["--model-control-mode=poll", "--repository-poll-secs=1"]),
            label="azure",
        ).start()
    finally:
        os.environ.clear()
        os.environ.update(old)
    try:
        assert {e["name"]: e.get("state") for e in srv.index()} == {"simple": "READY"}
        assert srv.infer("simple", SIMPLE_BODY).status_code == 200
        azure_upload(container, "repo", example_repo() / "identity_fp32")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(e["name"] == "identity_fp32" and e.get("state") == "READY" for e in srv.index()):
            time.sleep(0.2)
        assert any(e["name"] == "identity_fp32" and e.get("state") == "READY" for e in srv.index()), srv.output(40)
    finally:
        srv.stop()
