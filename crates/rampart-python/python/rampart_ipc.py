"""The worker side of Rampart's Python backend: one process per model instance.

It talks to the server over two Unix sockets (SOCK_SEQPACKET, one JSON message per datagram): fd 3 carries the
work (load, execute, finalize in; ready, responses, finalized out), read and answered by the main thread with no
hand-off; fd 4 carries what may come at any time (cancellations and answers to the model's own calls in; log
lines, model calls (BLS), model control and metrics out), read by a reader thread. Tensors travel in anonymous memory files (memfd) passed with the message: the sender writes them,
seals the file against any further change and passes the descriptor; the receiver maps it. No file in
/dev/shm and no name that anything else could open is involved.
"""

import array
import asyncio
import fcntl
import importlib
import inspect
import json
import mmap
import os
import queue
import socket
import sys
import threading
import traceback

import numpy as np

SOCKET_FD = 3
EVENTS_FD = 4
MAX_DATAGRAM = 65536
MAX_INLINE = 32768
ALIGN = 64
CODES = ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS",
         "CANCELLED"]
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

_sock = None
_events = None
_cancelled = set()
_model_name = ""
_instance_name = ""  # Triton's stub names the instance in its messages ("add_sub_0_0")
_calls = {}
_calls_lock = threading.Lock()
_next_call = [0]


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _memfd(parts):
    """A sealed memfd holding `parts` (bytes-like objects) at 64-byte aligned offsets; returns (fd, places)."""
    places = []
    total = 0
    for p in parts:
        places.append((total, len(p)))
        total = _align(total + len(p))
    fd = os.memfd_create("rampart-tensors", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, total)
        for p, (at, n) in zip(parts, places):
            view = memoryview(p)
            done = 0
            while done < n:
                done += os.pwrite(fd, view[done:], at + done)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd, places


_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def send_message(header, parts=(), events=False):
    """Sends `header` (on the events socket when `events`); `parts` go into one sealed memfd. A header too large
    for a datagram is put into the memfd as well, after the parts, and the datagram says where."""
    sock = _events if events else _sock
    data = _ENCODE(header).encode()
    parts = list(parts)
    sizes = [len(memoryview(p).cast("B")) for p in parts]
    total = 0
    for n in sizes:
        total = _align(total + n)
    if total and len(data) + 1 + total <= MAX_INLINE:
        # Small tensors travel in the datagram, after the header and a newline (compact JSON has none).
        buf = bytearray(len(data) + 1 + total)
        buf[:len(data)] = data
        buf[len(data)] = 0x0A
        at = len(data) + 1
        for p, n in zip(parts, sizes):
            buf[at:at + n] = memoryview(p).cast("B")
            at = len(data) + 1 + _align(at - len(data) - 1 + n)
        sock.send(buf)
        return None
    spilled = len(data) > MAX_INLINE
    if spilled:
        parts.append(data)
    if not spilled and all(len(p) == 0 for p in parts):
        sock.send(data)
        return None
    fd, places = _memfd(parts)
    try:
        if spilled:
            at, n = places[-1]
            data = json.dumps({"op": "spilled", "at": at, "len": n}).encode()
        socket.send_fds(sock, [data], [fd])
    finally:
        os.close(fd)
    return places


_buffers = threading.local()
_FDS_SPACE = socket.CMSG_SPACE(4 * 4)
# Plain ints: operations on the socket module's flag enums are slow in the per-message path.
_TRUNCATED = int(socket.MSG_TRUNC) | int(socket.MSG_CTRUNC)
_SOL_SOCKET, _SCM_RIGHTS = int(socket.SOL_SOCKET), int(socket.SCM_RIGHTS)


def receive(sock):
    """The next message on `sock`: (header, mapping or None). None at end of stream. Each thread reads into a
    buffer of its own, kept between messages."""
    buf = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = bytearray(MAX_DATAGRAM)
    n, ancdata, flags, _ = sock.recvmsg_into([buf], _FDS_SPACE)
    if flags & _TRUNCATED:
        raise RuntimeError("truncated message from the server")
    if not n:
        return None, None
    fds = []
    for level, kind, data in ancdata:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            fds.extend(array.array("i", data[: len(data) - len(data) % 4]))
    view = memoryview(buf)[:n]
    mapping = None
    for extra in fds[1:]:
        os.close(extra)
    if fds:
        fd = fds[0]
        try:
            size = os.fstat(fd).st_size
            if size:
                # Private and copy-on-write: model code may change its inputs in place.
                mapping = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
        finally:
            os.close(fd)
    nl = buf.find(b"\n", 0, n)
    if nl >= 0:
        # Small tensors inline; a private, writable copy as for a mapped file.
        if mapping is None:
            mapping = bytearray(view[nl + 1:])
        view = view[:nl]
    header = json.loads(bytes(view))
    if header.get("op") == "spilled":
        at, size = header["at"], header["len"]
        header = json.loads(mapping[at:at + size])
    return header, mapping


def error_json(message, code="INTERNAL"):
    return {"message": message, "code": code}


def _encode_outputs(tensors):
    """Wire descriptions and payloads of output tensors."""
    import triton_python_backend_utils as pb

    described, parts = [], []
    for t in tensors:
        arr = t._array  # as_numpy() refuses BF16
        if t._datatype == "BYTES":
            raw = pb.serialize_byte_tensor(arr)
            payload = b"" if raw == () else raw
        else:
            payload = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        described.append({"name": t.name(), "datatype": t._datatype, "shape": list(arr.shape)})
        parts.append(payload)
    return described, parts


def _send_responses(header, responses, events=False):
    """Sends `header` with each response's outputs placed in one memfd."""
    all_parts, slots = [], []
    for r in responses:
        if r is None or r.get("tensors") is None:
            continue
        described, parts = _encode_outputs(r.pop("tensors"))
        r["outputs"] = described
        for d, p in zip(described, parts):
            slots.append(d)
            all_parts.append(p)
    _place(slots, all_parts)
    send_message(header, all_parts, events)


def _place(descriptions, parts):
    """Writes each part's place ("at", "len") into its description, as _memfd and the inline datagram lay
    them out (the header carries them, so they are known before it is sent)."""
    at = 0
    for d, p in zip(descriptions, parts):
        d["at"], d["len"] = at, len(p)
        at = _align(at + len(p))


def _open_call():
    """A new call id and the queue the reader thread puts its answers on."""
    with _calls_lock:
        _next_call[0] += 1
        call_id = _next_call[0]
        answers = queue.Queue()
        _calls[call_id] = answers
    return call_id, answers


def _close_call(call_id):
    with _calls_lock:
        _calls.pop(call_id, None)


def _triton_error(e):
    """The TritonError a server error (`{"message", "code"}`) stands for."""
    import triton_python_backend_utils as pb

    code = CODES.index(e["code"]) if e.get("code") in CODES else pb.TritonError.INTERNAL
    return pb.TritonError(e["message"], code)


def _response_json(response):
    if response.has_error():
        e = response.error()
        return {"error": error_json(e.message(), CODES[e.code()] if 0 <= e.code() < len(CODES) else "INTERNAL")}
    return {"tensors": response.output_tensors(), "parameters": response.parameters()}


_seq_lock = threading.Lock()


def _take_seq(request, final):
    """The sequence number of the next message about `request` (see the server's pending.rs), or None when
    the request has ended; `final` ends it."""
    with _seq_lock:
        if request._closed:
            return None
        seq = request._seq
        request._seq += 1
        if final:
            request._closed = True
            _cancelled.discard((request._exec, request._index))
        return seq


def _item(request, seq, body):
    return {"request": request._index, "seq": seq, "flags": 1, "response": body}


def send_response(request, response, flags):
    """A response sender's send: to the server at once, on the events socket (any thread may send)."""
    import triton_python_backend_utils as pb

    final = bool(flags & pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    if not request._decoupled:
        # The first response is the answer and ends the request; a final flag after it changes nothing.
        with _seq_lock:
            if response is None:
                if not request._closed:
                    raise pb.TritonError("Unable to send response. Non-decoupled model cannot send complete "
                                         "final before sending a response.")
                if request._final_flag:
                    raise pb.TritonError("Unable to send response. Response sender has been closed.")
                request._final_flag = True
                return
            if request._closed:
                raise pb.TritonError(
                    "Unable to send response. Non-decoupled model cannot send more than one response.")
        final = True
    seq = _take_seq(request, final)
    if seq is None:
        raise pb.TritonError("Unable to send response. Response sender has been closed.")
    body = _response_json(response) if response is not None else None
    header = {"op": "response", "exec": request._exec, "request": request._index, "seq": seq,
              "flags": 1 if final else 0, "response": body}
    _send_responses(header, [body], events=True)


def _end_with_error(requests, err):
    """Error messages for the requests that have not ended."""
    items = []
    for r in requests:
        seq = _take_seq(r, True)
        if seq is not None:
            items.append(_item(r, seq, {"error": err}))
    return items


def call(request, decoupled):
    """Sends a BLS request to the server; answers its response (not decoupled) or a ResponseIterator over its
    responses (decoupled)."""
    import triton_python_backend_utils as pb

    call_id, answers = _open_call()
    descs, parts = _encode_outputs(request.inputs())
    _place(descs, parts)
    header = {
        "op": "bls", "call": call_id, "model_name": request.model_name(), "model_version": request.model_version(),
        "timeout": request.timeout(), "decoupled": decoupled,
        "request": {"id": request.request_id(), "parameters": request.parameters(),
                    "correlation_id": request.correlation_id(), "flags": request.flags(), "inputs": descs,
                    "outputs": request.requested_output_names()},
    }
    try:
        send_message(header, parts, events=True)
    except BaseException:
        _close_call(call_id)
        raise
    iterator = ResponseIterator(call_id, answers)
    if decoupled:
        # As Triton's: the call returns with its first response (so `await async_exec(decoupled=True)` waits for
        # it off the event loop).
        iterator._prefetch()
        return iterator
    responses = list(iterator)
    failed = [r for r in responses if r.has_error()]
    if failed:
        return failed[0]
    # A decoupled model's final flag sent alone is not a response here.
    sent = responses[:-1] if iterator.ended_alone and len(responses) > 1 else responses
    if len(sent) == 1:
        return sent[0]
    return pb.InferenceResponse(error=pb.TritonError(
        f"model '{request.model_name()}' sent {len(sent)} responses; use exec(decoupled=True) for a "
        "decoupled model"))


class ResponseIterator:
    """The responses of a call made with `exec(decoupled=True)`, as they come; the last one ends the iteration
    (a final flag sent without a response is an empty last response). Iterating again after the end starts
    from the first response, as Triton's does; `cancel()` cancels the call."""

    def __init__(self, call_id, answers):
        self._call = call_id
        self._answers = answers
        self._responses = []
        self._index = 0
        self._finished = False
        # Whether the final flag came alone (as an empty last response).
        self.ended_alone = False
        self._first = []

    def _prefetch(self):
        self._first.append(self._receive())

    def __iter__(self):
        if self._finished and self._index >= len(self._responses):
            self._index = 0
        return self

    def __next__(self):
        if self._finished:
            if self._index < len(self._responses):
                self._index += 1
                return self._responses[self._index - 1]
            raise StopIteration
        response, last = self._first.pop() if self._first else self._receive()
        self._responses.append(response)
        if last:
            self._finished = True
            self._index = len(self._responses)
            _close_call(self._call)
        return response

    def _receive(self):
        import triton_python_backend_utils as pb

        h, mapping = self._answers.get()
        if h.get("error"):
            return pb.InferenceResponse(error=_triton_error(h["error"])), True
        if not h.get("response"):
            self.ended_alone = True
            return pb.InferenceResponse([]), True
        outputs = [_input_tensor(d, mapping) for d in h.get("outputs", [])]
        return pb.InferenceResponse(outputs, parameters=h.get("parameters") or None), bool(h.get("final"))

    def cancel(self):
        """Cancels the call, as Triton's does: the model called sees its request cancelled (`is_cancelled()`)
        and decides; whatever it still sends is delivered, up to its last response (a model that honours
        cancellation ends with a CANCELLED error response)."""
        if not self._finished:
            send_message({"op": "bls_cancel", "call": self._call}, events=True)

    def __del__(self):
        if not self._finished:
            _close_call(self._call)


def _model_traceback(e):
    """The traceback of an exception, without the frames of this runtime and of the import machinery: the
    model's own lines are what its author needs."""
    here = os.path.dirname(os.path.abspath(__file__))
    te = traceback.TracebackException.from_exception(e)
    te.stack = traceback.StackSummary.from_list([
        f for f in te.stack
        if not f.filename.startswith(here) and not f.filename.startswith("<frozen ")
        and not f.filename.endswith(os.path.join("importlib", "__init__.py"))
    ])
    return "".join(te.format()).strip()


def _ask(header, parts=()):
    """Sends `header` (with a new call id) on the events socket and answers the server's one reply."""
    call_id, answers = _open_call()
    try:
        send_message({**header, "call": call_id}, parts, events=True)
        h, _ = answers.get()
    finally:
        _close_call(call_id)
    return h


def control(what, model_name, **fields):
    """A model-control request (load, unload, ready, metric) to the server; answers its result or raises its
    error."""
    files = fields.pop("files", None) or {}
    described = [{"name": name} for name in files]
    parts = [bytes(data) for data in files.values()]
    _place(described, parts)
    header = {"op": "control", "what": what, "model_name": model_name, "files": described}
    header.update(fields)
    h = _ask(header, parts)
    if h.get("error"):
        raise _triton_error(h["error"])
    result = h.get("result")
    return result if what == "metric" else bool(result)


def is_cancelled(request):
    """Whether the request is cancelled. Once the server said so the answer is kept; until then the server is
    asked (as Triton's stub asks its parent), so a cancellation is seen at once, not at the next poll."""
    key = (request._exec, request._index)
    if key in _cancelled:
        return True
    if _ask({"op": "is_cancelled", "exec": key[0], "request": key[1]}).get("result"):
        _cancelled.add(key)
        return True
    return False


def log(level, message):
    send_message({"op": "log", "level": level, "message": message}, events=True)


_NUMPY_TYPES = {}  # wire name -> (numpy dtype, item size), filled on first use


def _input_tensor(desc, mapping):
    import triton_python_backend_utils as pb

    shape = desc["shape"]
    at, n = desc["at"], desc["len"]
    dt = desc["datatype"]
    if dt == "BYTES":
        view = memoryview(mapping)[at:at + n] if n else b""
        arr = pb.deserialize_bytes_tensor(view).reshape(shape)
    else:
        known = _NUMPY_TYPES.get(dt)
        if known is None:
            np_type = np.dtype(pb._WIRE_TO_NUMPY[dt])
            known = _NUMPY_TYPES[dt] = (np_type, np_type.itemsize)
        np_type, size = known
        arr = np.frombuffer(mapping, dtype=np_type, count=n // size, offset=at) if n else np.empty(0, np_type)
        arr = arr.reshape(shape)
    return pb.Tensor(desc["name"], arr, dt)


def _request(exec_id, index, desc, mapping, decoupled):
    import triton_python_backend_utils as pb

    # Built field by field: what the server sent is already checked (the constructor's checks are for model
    # code that builds requests).
    r = pb.InferenceRequest.__new__(pb.InferenceRequest)
    r._model_name = _model_name
    r._requested = desc["outputs"]
    r._inputs = [_input_tensor(d, mapping) for d in desc["inputs"]]
    r._id = desc.get("id", "")
    r._correlation_id = desc.get("correlation_id", 0)
    r._model_version = -1
    r._flags = desc.get("flags", 0)
    r._timeout = desc.get("timeout", 0)
    r._trace = pb._NO_TRACE
    r._parameters = desc.get("parameters", "{}")
    r._sender = None
    r._index = index
    r._exec = exec_id
    r._decoupled = decoupled
    r._seq = 0
    r._closed = False
    r._final_flag = False
    return r


def _failure(e):
    import triton_python_backend_utils as pb

    traceback.print_exception(e, file=sys.stderr)
    code = CODES[e.code()] if isinstance(e, pb.TritonError) and 0 <= e.code() < len(CODES) else "INTERNAL"
    what = e.message() if isinstance(e, pb.TritonError) else f"{type(e).__name__}: {e}"
    return error_json(f"Failed to process the request(s) for model '{_instance_name}', message: {what}", code)


_loop = []


def _event_loop():
    """The event loop `async def execute` runs on: one per worker, on its own thread, started on first use,
    so tasks a model starts outlive the execute that started them."""
    if not _loop:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True, name="rampart-asyncio").start()
        _loop.append(loop)
    return _loop[0]


def _run(awaitable):
    async def wrapped():
        return await awaitable

    return asyncio.run_coroutine_threadsafe(wrapped(), _event_loop())


def _execute(model, header, mapping):
    """Runs `execute` on one execution's requests and says `done` when it returned, with what it returned.
    A decoupled model's `async def execute` runs on while the instance takes more requests."""
    exec_id = header["exec"]
    decoupled = header["decoupled"]
    requests = []
    try:
        requests = [_request(exec_id, i, d, mapping, decoupled) for i, d in enumerate(header["requests"])]
        result = model.execute(requests)
        if inspect.isawaitable(result):
            future = _run(result)
            if decoupled:
                future.add_done_callback(lambda f: _async_done(f, requests))
                result = None
            else:
                result = future.result()
        items = _returned(requests, result, decoupled)
    except Exception as e:  # noqa: BLE001 - every model error is reported to the server
        err = _failure(e)
        items = _end_with_error(requests, err)
        if not requests:
            items = [{"request": i, "seq": 0, "flags": 1, "response": {"error": err}}
                     for i in range(len(header["requests"]))]
        send_message({"op": "done", "exec": exec_id, "items": items, "failed": True})
        return
    _send_responses({"op": "done", "exec": exec_id, "items": items}, [i["response"] for i in items])


def _async_done(future, requests):
    """A decoupled model's `async def execute` ended: an exception or a returned value ends the requests it
    had not ended, with that error."""
    try:
        e = future.exception()
        if e is None:
            _returned(requests, future.result(), True)
            return
    except Exception as error:  # noqa: BLE001
        e = error
    items = _end_with_error(requests, _failure(e))
    for item in items:
        send_message({"op": "response", "exec": requests[0]._exec, **item}, events=True)


def _returned(requests, result, decoupled):
    """The messages for what `execute` returned (Triton's rules); raises what Triton reports as an error."""
    if result is None:
        if decoupled:
            return []
        # A request whose model never took its response sender can no longer be answered.
        missing = [r for r in requests if r._sender is None]
        return _end_with_error(missing, error_json(f"model '{_model_name}' returned no response for a request"))
    if decoupled:
        raise _ipc_error(f"Python model '{_instance_name}' is using the decoupled mode and the execute function "
                         "must return None.")
    if not isinstance(result, list):
        raise _ipc_error(f"Expected a list in the execute return, found type '{type(result)}'.")
    if len(result) != len(requests):
        raise _ipc_error("Number of InferenceResponse objects do not match the number of InferenceRequest "
                         f"objects. InferenceRequest(s) size is:{len(requests)}, and InferenceResponse(s) size "
                         f"is:{len(result)}")
    import triton_python_backend_utils as pb

    for resp in result:
        if resp is not None and not isinstance(resp, pb.InferenceResponse):
            raise _ipc_error("Expected an 'InferenceResponse' object in the execute function return list, "
                             f"found type '{type(resp)}'.")
    items = []
    for req, resp in zip(requests, result):
        if resp is None:
            if req._sender is None:
                items += _end_with_error([req], error_json(
                    f"model '{_model_name}' returned no response for a request"))
            continue
        seq = _take_seq(req, True)
        if seq is not None:
            items.append(_item(req, seq, _response_json(resp)))
    return items


def _ipc_error(message):
    import triton_python_backend_utils as pb

    return pb.TritonError(message)


def _load_module(path, version_dir, kind):
    """Imports the model's file as Triton's stub does: `<version>.<stem>` with the version directory and the
    model directory on the path (so `from . import helper` and `import helper` both work), or, for a
    Python-based backend, its `model.py` by name with the backend's directory on the path."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if kind == "backend":
        sys.path.append(os.path.dirname(path))
        name = stem
    else:
        sys.path.append(version_dir)
        sys.path.append(os.path.dirname(version_dir))
        name = f"{os.path.basename(version_dir)}.{stem}"
    module = importlib.import_module(name)
    if not hasattr(module, "TritonPythonModel"):
        raise RuntimeError(f"{path} defines no class TritonPythonModel")
    return module.TritonPythonModel


_model = []  # the model object, once initialize() returned


def _check_ready():
    """Runs the model's `is_ready()` (sync or `async def`) and answers whether it returned True; an exception
    or any other value is "not ready", as in Triton."""
    ready = False
    try:
        result = _model[0].is_ready()
        if inspect.isawaitable(result):
            result = _run(result).result()
        ready = result is True
    except Exception:  # noqa: BLE001 - a failing check is "not ready"
        traceback.print_exc()
    send_message({"op": "ready_answer", "ready": ready}, events=True)


def _reader():
    """Takes every message off the events socket: cancellations, and answers to the model's calls."""
    while True:
        try:
            header, mapping = receive(_events)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            header = None
        if header is None:
            return
        if header["op"] == "cancel":
            _cancelled.add((header["exec"], header["request"]))
        elif header["op"] == "is_ready":
            threading.Thread(target=_check_ready, daemon=True, name="rampart-is-ready").start()
        elif header["op"] in ("bls_response", "control_response"):
            with _calls_lock:
                answers = _calls.get(header["call"])
            if answers is not None:
                answers.put((header, mapping))


def main():
    global _sock, _events, _model_name, _instance_name
    sys.argv = [""]  # as Triton's stub: model code may call unittest.main() or argparse
    _sock = socket.socket(fileno=SOCKET_FD)
    _events = socket.socket(fileno=EVENTS_FD)
    header, _ = receive(_sock)
    if header is None:
        return
    _model_name = header.get("model_name", "")
    _instance_name = header.get("args", {}).get("model_instance_name", _model_name)
    # The reader runs from the start: model code may call the server (metrics, BLS) from initialize().
    threading.Thread(target=_reader, daemon=True).start()
    try:
        cls = _load_module(header["model_file"], header["version_dir"], header.get("import", "default"))
        if header["mode"] == "auto_complete":
            import triton_python_backend_utils as pb

            completed = None
            if hasattr(cls, "auto_complete_config"):
                cfg = cls.auto_complete_config(pb.ModelConfig(header["config"]))
                if not isinstance(cfg, pb.ModelConfig):
                    raise TypeError(f"auto_complete_config function in model '{_model_name}' must return a "
                                    "valid pb.ModelConfig object.")
                completed = json.dumps(cfg.as_dict())
            send_message({"op": "config", "config": completed})
            return
        model = cls()
        if hasattr(model, "initialize"):
            result = model.initialize(header["args"])
            if inspect.isawaitable(result):
                _run(result).result()
    except BaseException as e:  # noqa: BLE001 - the server shows the traceback as the load error
        send_message({"op": "failed", "message": _model_traceback(e)[-8000:]})
        return
    _model.append(model)
    send_message({"op": "ready", "is_ready": callable(getattr(model, "is_ready", None))})
    while True:
        try:
            header, mapping = receive(_sock)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            header, mapping = None, None
        if header is None or header["op"] == "finalize":
            break
        if header["op"] == "execute":
            _execute(model, header, mapping)
    try:
        if hasattr(model, "finalize"):
            model.finalize()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
    if header is not None:
        send_message({"op": "finalized"})
    sys.stdout.flush()
    os._exit(0)
