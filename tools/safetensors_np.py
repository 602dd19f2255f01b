"""safetensors with numpy only, for the reference scripts, benchmarks and tests (the C side reads
and writes the format itself, core/lib/sf_safetensors.c). The layout: a little-endian u64 header
length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}} padded with
spaces to a multiple of 8 bytes, then the tensors, row-major and little-endian.

  write(path, {name: array}, metadata=None)    the dtype follows each array's, ("BF16", uint16 bits)
                                               for bfloat16; gzip if path ends in .gz; atomic (rename)
  from_torch(tensor) -> what write() takes      (bfloat16 as its bit patterns)
  read(path) -> ({name: (dtype, array)}, metadata)
                                               arrays as stored; BF16 as uint16 bit patterns
  read_f32(path) -> {name: array}              floating tensors widened to float32, others as stored
"""
import gzip
import json
import os
import struct

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U8": "u1"}
_NAMES = {np.dtype(v): k for k, v in DTYPES.items() if k != "BF16"}  # numpy has no bfloat16


def write(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        dtype, a = a if isinstance(a, tuple) else (None, a)
        a = np.ascontiguousarray(a)
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype or _NAMES[a.dtype.newbyteorder("<")], "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with (gzip.open if path.endswith(".gz") else open)(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(path + ".tmp", path)


def from_torch(t):
    import torch  # only for callers that have it
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return ("BF16", t.view(torch.int16).numpy().view(np.uint16))
    return t.numpy()


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, h in header.items():
        s, e = h["data_offsets"]
        out[name] = (h["dtype"], np.frombuffer(data[s:e], dtype=DTYPES[h["dtype"]]).reshape(h["shape"]))
    return out, metadata


def as_f32(dtype, a):
    """A read tensor as float32 if it is floating (BF16 widened from its bits), else unchanged."""
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32) if dtype.startswith("F") else a


def read_f32(path):
    return {name: as_f32(dt, a) for name, (dt, a) in read(path)[0].items()}
