"""DLPack capsules for the tensors numpy cannot describe (BF16), written for Rampart's Python runtime.

numpy has no bfloat16, so Triton's `pb_utils` moves BF16 tensors only through DLPack (`to_dlpack`,
`from_dlpack`, `__dlpack__`). This module builds and reads the C structures of the DLPack ABI (v0.x
`DLManagedTensor` in a capsule named "dltensor") with ctypes, so that BF16 works without torch in the worker:
a BF16 input can be handed on, and a BF16 tensor made by torch or any other DLPack producer can be returned.
"""

import ctypes

import numpy as np

K_DL_CPU = 1
K_DL_CUDA_HOST = 3
K_DL_BFLOAT = 4


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    pass


_Deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _Deleter)]

_NAME = b"dltensor"
_USED_NAME = b"used_dltensor"

_api = ctypes.pythonapi
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]


def export(array, code, bits):
    """A DLPack capsule for `array` (a writable numpy array of `bits`-bit integers) that describes its elements
    as `code`/`bits` (e.g. kDLBfloat/16). numpy makes the capsule, so numpy's own deleter and capsule destructor
    keep the memory alive exactly as long as the consumer (or an unconsumed capsule) needs it; only the element
    type in the DLTensor is rewritten."""
    capsule = np.ascontiguousarray(array).__dlpack__()
    managed = _DLManagedTensor.from_address(_api.PyCapsule_GetPointer(capsule, _NAME))
    if managed.dl_tensor.dtype.bits != bits:
        raise ValueError(f"cannot describe {managed.dl_tensor.dtype.bits}-bit elements as {bits}-bit ones")
    managed.dl_tensor.dtype.code = code
    return capsule


def capsule_of(obj):
    """The DLPack capsule of a producer (`__dlpack__`) or a capsule itself."""
    if hasattr(obj, "__dlpack__"):
        return obj.__dlpack__()
    return obj


def peek_dtype(capsule):
    """(type code, bits) of the elements of an unconsumed "dltensor" capsule, or None for anything else."""
    if type(capsule).__name__ != "PyCapsule" or not _api.PyCapsule_IsValid(capsule, _NAME):
        return None
    d = _DLManagedTensor.from_address(_api.PyCapsule_GetPointer(capsule, _NAME)).dl_tensor.dtype
    return d.code, d.bits


def consume_as(capsule, np_type):
    """Copies the CPU tensor in `capsule` into a new numpy array of `np_type` (same item size), marks the
    capsule used and releases it through its deleter."""
    address = _api.PyCapsule_GetPointer(capsule, _NAME)
    managed = _DLManagedTensor.from_address(address)
    t = managed.dl_tensor
    if t.device.device_type not in (K_DL_CPU, K_DL_CUDA_HOST):
        raise ValueError("only CPU tensors can be imported through DLPack")
    item = np.dtype(np_type).itemsize
    if t.dtype.bits != item * 8 or t.dtype.lanes != 1:
        raise ValueError(f"DLPack tensor has {t.dtype.bits}-bit elements with {t.dtype.lanes} lanes")
    shape = tuple(t.shape[i] for i in range(t.ndim))
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count == 0 or not t.data:
        out = np.empty(shape, dtype=np_type)
    else:
        strides = tuple(t.strides[i] * item for i in range(t.ndim)) if t.strides else None
        base = t.data + t.byte_offset
        if strides is None:
            extent = count * item
        else:
            extent = item + sum((n - 1) * abs(s) for n, s in zip(shape, strides))
            if any(s < 0 for s in strides):
                raise ValueError("DLPack tensors with negative strides are not supported")
        raw = (ctypes.c_char * extent).from_address(base)
        view = np.ndarray(shape, dtype=np_type, buffer=raw, strides=strides)
        out = np.array(view, copy=True, order="C")
    _api.PyCapsule_SetName(capsule, _USED_NAME)
    if managed.deleter:
        managed.deleter(address)
    return out
