"""Rampart's implementation of the `triton_python_backend_utils` module (imported by models as `pb_utils`).

Written for Rampart from the documented API of Triton's Python backend: model code written against Triton
imports it unchanged. Tensors arrive in sealed anonymous memory that the worker maps privately, so an input's
numpy array is writable without touching the server's copy.
"""

import json
import struct

import numpy as np

import rampart_dlpack as _dlpack
import rampart_ipc as _ipc

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

# Data types: the config's TYPE_* enum numbers, the wire names and numpy types.
_TYPES = [
    # (config enum, wire name, numpy type)
    (1, "BOOL", np.bool_),
    (2, "UINT8", np.uint8),
    (3, "UINT16", np.uint16),
    (4, "UINT32", np.uint32),
    (5, "UINT64", np.uint64),
    (6, "INT8", np.int8),
    (7, "INT16", np.int16),
    (8, "INT32", np.int32),
    (9, "INT64", np.int64),
    (10, "FP16", np.float16),
    (11, "FP32", np.float32),
    (12, "FP64", np.float64),
    (13, "BYTES", np.object_),
    (14, "BF16", np.uint16),
]
_ENUM_TO_NUMPY = {e: t for e, _, t in _TYPES}
_WIRE_TO_NUMPY = {w: t for _, w, t in _TYPES}
_WIRE_TO_ENUM = {w: e for e, w, _ in _TYPES}
_ENUM_TO_WIRE = {e: w for e, w, _ in _TYPES}

TRITON_STRING_TO_NUMPY = {"TYPE_" + w: t for _, w, t in _TYPES if w not in ("BYTES", "BF16")}
TRITON_STRING_TO_NUMPY["TYPE_BOOL"] = bool
TRITON_STRING_TO_NUMPY["TYPE_STRING"] = np.object_


def triton_to_numpy_type(data_type):
    """The numpy type of a config data type number (TYPE_BOOL = 1 … TYPE_STRING = 13)."""
    if data_type == 14:
        return None
    return _ENUM_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type):
    """The config data type number of a numpy type."""
    if data_type == np.object_ or data_type == np.bytes_:
        return 13
    for enum, wire, t in _TYPES:
        if wire not in ("BYTES", "BF16") and data_type == t:
            return enum
    return None


def triton_string_to_numpy(triton_type_string):
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def serialize_byte_tensor(input_tensor):
    """Flattens a BYTES tensor (numpy object or bytes_ array) in C order into 4-byte little-endian length
    prefixes followed by each element's bytes. `str` elements are encoded as UTF-8."""
    if input_tensor.size == 0:
        return ()
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type != np.bytes_:
        return None
    parts = []
    for item in input_tensor.reshape(-1, order="C"):
        if isinstance(item, (bytes, bytearray, memoryview, np.bytes_)):
            raw = bytes(item)
        else:
            raw = str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes_tensor(encoded_tensor):
    """The elements of a length-prefixed BYTES buffer as a 1-D numpy object array of `bytes`."""
    view = memoryview(encoded_tensor).cast("B")
    items = []
    at = 0
    while at < len(view):
        if at + 4 > len(view):
            raise TritonError("malformed BYTES tensor: a length prefix is cut off")
        (n,) = struct.unpack_from("<I", view, at)
        at += 4
        if at + n > len(view):
            raise TritonError("malformed BYTES tensor: an element is longer than the buffer")
        items.append(bytes(view[at : at + n]))
        at += n
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out


class TritonError(Exception):
    """An error with one of Triton's codes; as a response's error it reaches the client with that code."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message, code=INTERNAL):
        super().__init__(message)
        self._message = str(message)
        self._code = code

    def message(self):
        return self._message

    def code(self):
        return self._code


TritonModelException = TritonError


class Tensor:
    """A named tensor backed by a numpy array (CPU memory)."""

    def __init__(self, name, data, _datatype=None):
        if not isinstance(name, str):
            raise TritonError("tensor name must be a string", TritonError.INVALID_ARG)
        if not isinstance(data, np.ndarray):
            raise TritonError(
                f"tensor '{name}': data must be a numpy array, got {type(data).__name__}",
                TritonError.INVALID_ARG,
            )
        if _datatype is None:
            _datatype = _wire_type_of(data.dtype, name)
        self._name = name
        self._array = data
        self._datatype = _datatype

    def name(self):
        return self._name

    def as_numpy(self):
        if self._datatype == "BF16":
            # Triton's message: numpy has no bfloat16.
            raise TritonError(
                "Tensor dtype is BF16 and cannot be converted to NumPy. Use to_dlpack() and from_dlpack() instead."
            )
        return self._array

    def shape(self):
        return list(self._array.shape)

    def triton_dtype(self):
        return _WIRE_TO_ENUM[self._datatype]

    def is_cpu(self):
        return True

    def to_dlpack(self):
        return self.__dlpack__()

    def __dlpack__(self, **kwargs):
        """The DLPack protocol, so that torch.from_dlpack(tensor) or np.from_dlpack(tensor) reads it."""
        if self._datatype == "BYTES":
            raise TritonError("TYPE_BYTES tensors cannot be converted to DLPack.", TritonError.UNSUPPORTED)
        array = np.ascontiguousarray(self._array)
        if not array.flags.writeable:
            array = array.copy()  # DLPack cannot say read-only
        if self._datatype == "BF16":
            return _dlpack.export(array, _dlpack.K_DL_BFLOAT, 16)
        return array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0

    @staticmethod
    def from_dlpack(name, dlpack_object):
        if isinstance(dlpack_object, np.ndarray):
            return Tensor(name, dlpack_object)
        capsule = _dlpack.capsule_of(dlpack_object)
        described = _dlpack.peek_dtype(capsule)
        if described is not None and described[0] == _dlpack.K_DL_BFLOAT:
            if described[1] != 16:
                raise TritonError(f"Expected BF16 tensor to have 16 bits, but had: {described[1]}")
            try:
                return Tensor(name, _dlpack.consume_as(capsule, np.uint16), "BF16")
            except ValueError as e:
                raise TritonError(f"tensor '{name}': {e}", TritonError.INVALID_ARG) from None
        return Tensor(name, np.from_dlpack(_Capsule(capsule)))

    def __repr__(self):
        return f"Tensor(name={self._name!r}, datatype={self._datatype}, shape={self.shape()})"


class _Capsule:
    """Lets numpy import a bare DLPack capsule (CPU)."""

    def __init__(self, capsule):
        self._capsule = capsule

    def __dlpack__(self, **_kwargs):
        return self._capsule

    def __dlpack_device__(self):
        return (1, 0)


_DTYPE_TO_WIRE = {np.dtype(t): w for _, w, t in _TYPES if w not in ("BYTES", "BF16")}


def _wire_type_of(dtype, name):
    wire = _DTYPE_TO_WIRE.get(dtype)
    if wire is not None:
        return wire
    if dtype == np.object_ or dtype.type == np.bytes_:
        return "BYTES"
    raise TritonError(f"tensor '{name}': numpy type {dtype} has no Triton data type", TritonError.INVALID_ARG)


class InferenceResponse:
    """The answer to one request: output tensors, or an error."""

    def __init__(self, output_tensors=None, error=None, parameters=None):
        output_tensors = [] if output_tensors is None else output_tensors
        if not isinstance(output_tensors, (list, tuple)):
            raise TritonError("output_tensors must be a list of pb_utils.Tensor", TritonError.INVALID_ARG)
        for t in output_tensors:
            if not isinstance(t, Tensor):
                raise TritonError("output_tensors must be a list of pb_utils.Tensor", TritonError.INVALID_ARG)
        if error is not None and not isinstance(error, TritonError):
            raise TritonError("error must be a pb_utils.TritonError", TritonError.INVALID_ARG)
        self._outputs = list(output_tensors)
        self._error = error
        self._parameters = _parameters_json(parameters)

    def output_tensors(self):
        return self._outputs

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error

    def parameters(self):
        return self._parameters


def _parameters_json(parameters):
    if parameters is None:
        return "{}"
    if isinstance(parameters, str):
        json.loads(parameters)
        return parameters
    # Triton's messages.
    if not isinstance(parameters, dict):
        raise TritonError(f"Expect dict, got {type(parameters)}", TritonError.INVALID_ARG)
    for k, v in parameters.items():
        if not isinstance(k, str):
            raise TritonError(f"Expect parameters keys to have type str, found type {type(k)}",
                              TritonError.INVALID_ARG)
        if not isinstance(v, (bool, int, str)):
            raise TritonError(f"Expect parameters values to have type bool/int/str, found type {type(v)}",
                              TritonError.INVALID_ARG)
    return json.dumps(parameters)


class InferenceResponseSender:
    """Sends the responses of one request of a decoupled model."""

    def __init__(self, request):
        self._request = request

    def send(self, response=None, flags=0):
        if flags not in (0, TRITONSERVER_RESPONSE_COMPLETE_FINAL):
            raise TritonError("Unable to send response. Unsupported flag provided.")
        if response is None and flags != TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            raise TritonError("Unable to send response. A response or the final flag is needed.")
        if response is not None and not isinstance(response, InferenceResponse):
            raise TritonError("response must be a pb_utils.InferenceResponse", TritonError.INVALID_ARG)
        _ipc.send_response(self._request, response, flags)

    def is_closed(self):
        return self._request._closed

    def is_cancelled(self):
        return self._request.is_cancelled()


_REQUIRED = object()

TRITONSERVER_MEMORY_CPU = 0
TRITONSERVER_MEMORY_CPU_PINNED = 1
TRITONSERVER_MEMORY_GPU = 2


class PreferredMemory:
    """Where a BLS call's outputs should be placed; Rampart has CPU memory only, so every output is on the
    CPU whatever is asked."""

    def __init__(self, preferred_memory_type=TRITONSERVER_MEMORY_CPU, preferred_device_id=0):
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceTrace:
    """The trace of a request as model code sees it (`request.trace()`); Rampart traces BLS calls as the
    server's own requests, so this carries nothing."""

    def get_context(self, mode="opentelemetry"):
        return None


_NO_TRACE = InferenceTrace()


class InferenceRequest:
    """A request the model received (`execute(requests)`), or one it builds to call another model (BLS)."""

    def __init__(
        self,
        request_id="",
        correlation_id=0,
        inputs=_REQUIRED,
        requested_output_names=_REQUIRED,
        model_name=_REQUIRED,
        model_version=-1,
        flags=0,
        timeout=0,
        preferred_memory=None,
        trace=None,
        parameters=None,
    ):
        # As Triton's binding: the three are required and no argument but `parameters` may be None.
        given = {"inputs": inputs, "requested_output_names": requested_output_names, "model_name": model_name,
                 "request_id": request_id, "correlation_id": correlation_id, "model_version": model_version,
                 "flags": flags, "timeout": timeout}
        for name, value in given.items():
            if value is _REQUIRED:
                raise TypeError(f"InferenceRequest() missing required argument '{name}'")
            if value is None:
                raise TypeError(f"InferenceRequest() argument '{name}' must not be None")
        if not isinstance(model_name, str):
            raise TypeError("InferenceRequest() argument 'model_name' must be a str")
        if not all(isinstance(t, Tensor) for t in inputs):
            raise TypeError("InferenceRequest() argument 'inputs' must be a list of pb_utils.Tensor")
        if not all(isinstance(n, str) for n in requested_output_names):
            raise TypeError("InferenceRequest() argument 'requested_output_names' must be a list of str")
        self._model_name = model_name
        self._requested = list(requested_output_names)
        self._inputs = list(inputs)
        self._id = request_id
        self._correlation_id = correlation_id
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout
        self._preferred_memory = preferred_memory or PreferredMemory()
        self._trace = trace or InferenceTrace()
        self._parameters = _parameters_json(parameters)
        self._index = None
        self._sender = None

    def set_flags(self, flags):
        self._flags = flags

    def trace(self):
        return self._trace

    def inputs(self):
        return self._inputs

    def request_id(self):
        return self._id

    def correlation_id(self):
        return self._correlation_id

    def flags(self):
        return self._flags

    def timeout(self):
        return self._timeout

    def parameters(self):
        return self._parameters

    def model_name(self):
        return self._model_name

    def model_version(self):
        return self._model_version

    def requested_output_names(self):
        return self._requested

    def get_response_sender(self):
        if self._index is None:
            raise TritonError("only a request the model received has a response sender")
        if self._sender is None:
            self._sender = InferenceResponseSender(self)
        return self._sender

    def is_cancelled(self):
        return self._index is not None and _ipc.is_cancelled(self)

    def set_release_flags(self, flags):
        if flags != TRITONSERVER_REQUEST_RELEASE_ALL:
            raise TritonError("request rescheduling is not supported by Rampart", TritonError.UNSUPPORTED)

    def exec(self, decoupled=False):
        """Runs this request on another model of the server (BLS). Returns its response (an error is the
        response's error); with `decoupled=True`, an iterator over its responses (the last one may be empty:
        a final flag sent alone)."""
        return _ipc.call(self, decoupled)

    async def async_exec(self, decoupled=False):
        """`exec` for `async def execute`: other coroutines run while the call is in flight."""
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.exec, decoupled)


def load_model(model_name, config="", files=None):
    """Loads (or reloads) a model of the repository, as the repository API does: explicit model-control mode
    only, and only when the operator allows model code to (`--backend-config=python,allow-model-control=true`).
    `config` is a model config as JSON; `files` maps `file:<path>` to bytes (needs
    `--allow-model-file-override`)."""
    _ipc.control("load", model_name, config=config or "", files=files or {})


def unload_model(model_name, unload_dependents=False):
    """Unloads a model (the same conditions as `load_model`)."""
    _ipc.control("unload", model_name, dependents=bool(unload_dependents))


def is_model_ready(model_name, model_version=""):
    """Whether the model (or the given version) is ready."""
    return _ipc.control("ready", model_name, model_version=str(model_version))


def get_input_tensor_by_name(inference_request, name):
    for t in inference_request.inputs():
        if t.name() == name:
            return t
    return None


def get_output_tensor_by_name(inference_response, name):
    for t in inference_response.output_tensors():
        if t.name() == name:
            return t
    return None


def get_input_config_by_name(model_config, name):
    for i in model_config.get("input", []):
        if i["name"] == name:
            return i
    return None


def get_output_config_by_name(model_config, name):
    for o in model_config.get("output", []):
        if o["name"] == name:
            return o
    return None


def using_decoupled_model_transaction_policy(model_config):
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


class MetricFamily:
    """A family of metrics model code defines; its metrics appear on the server's /metrics page. A second
    family of the same name and kind is the same family (the first description stays)."""

    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2

    def __init__(self, name, description, kind):
        if kind not in (MetricFamily.COUNTER, MetricFamily.GAUGE, MetricFamily.HISTOGRAM):
            raise TritonError("kind must be MetricFamily.COUNTER, GAUGE or HISTOGRAM", TritonError.INVALID_ARG)
        self._name = name
        self._kind = kind
        # Shared with this object's metrics, which must not outlive it (Triton's rule).
        self._alive = [True]
        _ipc.control("metric", "", metric_op="family", family=name, description=description, kind=kind)

    def Metric(self, labels=None, buckets=None):
        return Metric(self, labels, buckets)

    def __del__(self):
        self._alive[0] = False


class Metric:
    """One metric (one set of labels) of a MetricFamily."""

    def __init__(self, family, labels=None, buckets=None):
        if family._kind == MetricFamily.HISTOGRAM:
            if buckets is None:
                raise TritonError("a histogram metric needs buckets", TritonError.INVALID_ARG)
            buckets = [float(b) for b in buckets]
            if any(b >= c for b, c in zip(buckets, buckets[1:])):
                raise TritonError("histogram buckets must be in strictly increasing order", TritonError.INVALID_ARG)
        self._family = family._name
        self._kind = family._kind
        self._alive = family._alive
        self._labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self._op("metric", buckets=[float(b) for b in (buckets or [])])

    def _op(self, op, **fields):
        if not self._alive[0]:
            raise TritonError("Invalid metric operation as the corresponding 'MetricFamily' has been deleted.")
        return _ipc.control("metric", "", metric_op=op, family=self._family, labels=self._labels, **fields)

    def _not_histogram(self, what):
        if self._kind == MetricFamily.HISTOGRAM:
            raise TritonError(f"a histogram metric does not support {what}()", TritonError.UNSUPPORTED)

    def increment(self, value):
        self._not_histogram("increment")
        self._op("increment", value=float(value))

    def set(self, value):
        self._not_histogram("set")
        self._op("set", value=float(value))

    def observe(self, value):
        self._op("observe", value=float(value))

    def value(self):
        self._not_histogram("value")
        return self._op("value")


class LogLevel:
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


class Logger:
    """Writes to the server's log, tagged with the model."""

    LogLevel = LogLevel
    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE

    @staticmethod
    def log(message, level=LogLevel.INFO):
        names = {LogLevel.INFO: "info", LogLevel.WARNING: "warn", LogLevel.ERROR: "error"}
        _ipc.log(names.get(level, "verbose"), str(message))

    @staticmethod
    def log_info(message):
        Logger.log(message, LogLevel.INFO)

    @staticmethod
    def log_warn(message):
        Logger.log(message, LogLevel.WARNING)

    @staticmethod
    def log_error(message):
        Logger.log(message, LogLevel.ERROR)

    @staticmethod
    def log_verbose(message):
        Logger.log(message, LogLevel.VERBOSE)


def _dims(dims):
    return "[" + ",".join(str(d) for d in dims) + "]"


class ModelConfig:
    """The config handed to `auto_complete_config`: read with `as_dict()`, changed with the setters."""

    def __init__(self, model_config):
        self._config = json.loads(model_config) if isinstance(model_config, str) else model_config

    def as_dict(self):
        return self._config

    def _name(self):
        return self._config.get("name", "")

    def set_max_batch_size(self, max_batch_size):
        current = self._config.get("max_batch_size", 0)
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in auto-complete-config function for "
                f"model '{self._name()}' specified max_batch_size {max_batch_size}"
            )
        self._config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self):
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{other}', but auto-complete-config "
                    f"function for model '{self._name()}' tries to set scheduling_choice as 'dynamic_batching'"
                )
        self._config.setdefault("dynamic_batching", {})

    def _add(self, kind, tensor, allowed):
        if "name" not in tensor:
            raise ValueError(
                f"{kind} in auto-complete-config function for model '{self._name()}' is missing 'name' property."
            )
        name = tensor["name"]
        for key in tensor:
            if key not in allowed:
                raise ValueError(
                    f"{kind} '{name}' in auto-complete-config function for model '{self._name()}' contains "
                    f"property other than {', '.join(repr(a) for a in allowed[:-1])} and {allowed[-1]!r}."
                )
        for key in ("data_type", "dims"):
            if key not in tensor:
                raise ValueError(
                    f"{kind} '{name}' in auto-complete-config function for model '{self._name()}' is missing "
                    f"'{key}' property."
                )
        entries = self._config.setdefault(kind, [])
        for existing in entries:
            if existing.get("name") != name:
                continue
            # Triton's words: the configuration file "expects", the model (its auto-complete) "provides".
            theirs_type = existing.get("data_type", "TYPE_INVALID")
            if theirs_type not in ("", "TYPE_INVALID") and theirs_type != tensor["data_type"]:
                raise ValueError(
                    f"unable to load model '{self._name()}', configuration expects datatype {theirs_type} for "
                    f"{kind} '{name}', model provides {tensor['data_type']}"
                )
            theirs_dims = [int(d) for d in existing.get("dims", [])]
            mine_dims = [int(d) for d in tensor["dims"]]
            if theirs_dims and theirs_dims != mine_dims:
                raise ValueError(
                    f"model '{self._name()}', tensor '{name}': the model expects dims {_dims(mine_dims)} but "
                    f"the model configuration specifies dims {_dims(theirs_dims)}"
                )
            existing.update(tensor)
            return
        entries.append(dict(tensor))

    def add_input(self, input):
        self._add("input", input, ["name", "data_type", "dims", "optional"])

    def add_output(self, output):
        self._add("output", output, ["name", "data_type", "dims"])

    def set_model_transaction_policy(self, transaction_policy_dict):
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError(
                    f"model transaction property in auto-complete-config function for model '{self._name()}' "
                    "contains property other than 'decoupled'."
                )
        current = self._config.setdefault("model_transaction_policy", {})
        wanted = bool(transaction_policy_dict.get("decoupled", False))
        if "decoupled" in current and bool(current["decoupled"]) != wanted:
            raise ValueError(
                f"trying to change decoupled property in auto-complete-config for model '{self._name()}', "
                f"which is already set to '{current['decoupled']}'."
            )
        current["decoupled"] = wanted
