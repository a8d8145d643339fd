"""Minimal safetensors reader/writer for the reference tools (no pip package needed).

Format: 8-byte little-endian header length, JSON header {name: {dtype, shape, data_offsets},
"__metadata__": {str: str}}, then raw little-endian bytes.  Same layout unet writes.
"""
import json
import struct

import numpy as np

_DT = {
    np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("float16"): "F16",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("int16"): "I16",
    np.dtype("int8"): "I8", np.dtype("uint8"): "U8", np.dtype("uint16"): "U16",
    np.dtype("bool"): "BOOL",
}
_NP = {v: k for k, v in _DT.items()}


def _to_numpy(t):
    try:
        import torch
        if isinstance(t, torch.Tensor):
            return t.detach().cpu().contiguous().numpy()
    except ImportError:
        pass
    return np.ascontiguousarray(t)


def save(path, tensors, metadata=None):
    """tensors: dict name -> torch.Tensor or numpy array (written in insertion order)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    off = 0
    for name, t in tensors.items():
        a = _to_numpy(t)
        if a.dtype not in _DT:
            raise TypeError(f"{name}: unsupported dtype {a.dtype}")
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DT[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path):
    """Returns (dict name -> numpy array, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, e in header.items():
        s, t = e["data_offsets"]
        out[name] = np.frombuffer(data[base + s:base + t], dtype=_NP[e["dtype"]]).reshape(e["shape"]).copy()
    return out, meta
