#!/usr/bin/env python3
"""Python interop both ways: pyzmq + msgpack_numpy read a pipeline's messages (zmq_out) and feed one
(zmq_in), with numpy arrays of every dtype arriving bit-exact; msgpack_numpy decodes tensors of every
dtype and rank 0-3 that the C encoder wrote (interop_encode) into the arrays numpy builds here.
Usage: test_python_interop.py SAEFLOW INTEROP_ENCODE"""
import io, os, random, subprocess, sys, tempfile

try:
    import msgpack, msgpack_numpy, numpy as np, zmq
except ImportError as e:
    print(f"skipped: {e} (apt-get install python3-zmq python3-msgpack-numpy)")
    sys.exit(77)

saeflow, encoder = sys.argv[1], sys.argv[2]
tmp = tempfile.mkdtemp(prefix="sf-py-")
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def fnv1a(b):
    h = 1469598103934665603
    for x in b:
        h = ((h ^ x) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def flow(name, text):
    path = os.path.join(tmp, name)
    open(path, "w").write(text)
    return path


def recv_all(sock):
    out = []
    while True:
        f = sock.recv()
        if not f:
            return out
        out.append(msgpack.unpackb(f, object_hook=msgpack_numpy.decode, raw=False))


ctx = zmq.Context()

# 1. saeflow -> Python: tensor_gen's messages read by msgpack_numpy, checksums recomputed here.
port = random.randrange(20000, 60000)
n = 300
p = subprocess.Popen([saeflow, "run", flow("out.flow", f"""
stage gen = tensor_gen {{
    count = {n}
    rows = 3
    cols = 5
}}
stage tap = zmq_out {{
    input = gen
    endpoint = tcp://127.0.0.1:{port}
}}
"""), "--no-progress"], stderr=subprocess.PIPE, text=True)
s = ctx.socket(zmq.PULL)
s.connect(f"tcp://127.0.0.1:{port}")
msgs = recv_all(s)
p.wait(timeout=60)
check(p.returncode == 0 and len(msgs) == n, f"Python read {len(msgs)} of {n} messages from zmq_out")
good = sum(1 for m in msgs if isinstance(m["tensor"], np.ndarray) and m["tensor"].dtype == np.float32
           and m["tensor"].shape == (3, 5) and fnv1a(m["tensor"].tobytes()) >> 1 == m["checksum"])
check(good == n, f"every tensor decodes as float32 (3, 5) numpy with the checksum the C side computed ({good}/{n})")
check(sorted(m["seq"] for m in msgs) == list(range(n)), "every seq once")

# 1b. C encoder -> Python, every dtype and rank: the values interop_encode.c documents, built by numpy.
NUMPY = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": "V2", "I8": np.int8, "I16": np.int16,
         "I32": np.int32, "I64": np.int64, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
         "BOOL": np.bool_}
SHAPES = [(), (5,), (2, 3), (2, 3, 4), (0, 3)]


def expected(name, shape):
    n = int(np.prod(shape))
    i = np.arange(n)
    if name == "BOOL":
        hi, lo, v = True, False, i % 3 == 0
    elif name[0] in "FB":
        hi = {"F32": float(np.finfo(np.float32).max), "F64": float(np.finfo(np.float64).max), "F16": 65504.0,
              "BF16": float.fromhex("0x1.fep127")}[name]
        lo, v = -hi, (i - 5) * 0.25
    else:
        info = np.iinfo(NUMPY[name])
        hi, lo, v = int(info.max), int(info.min), (i * 5 - 20 if info.min < 0 else i * 9)
    vals = [hi if k == 0 else lo if k == n - 1 else v[k].item() for k in range(n)]
    if name == "BF16":  # exact values: the top 16 bits of their float32
        return (np.array(vals, np.float32).view(np.uint32) >> 16).astype(np.uint16).view("V2").reshape(shape)
    return np.array(vals, dtype=NUMPY[name]).reshape(shape)


enc = subprocess.run([encoder], capture_output=True, timeout=60)
decoded = list(msgpack.Unpacker(io.BytesIO(enc.stdout), object_hook=msgpack_numpy.decode, raw=False))
want = [(name, shape) for name in NUMPY for shape in SHAPES]
check(enc.returncode == 0 and len(decoded) == len(want), f"msgpack_numpy decoded {len(decoded)} of {len(want)} C-encoded messages")
bad = []
for m, (name, shape) in zip(decoded, want):
    e, a = expected(name, shape), m.get("a")
    if not (m["dtype"] == name and m["rank"] == len(shape) and isinstance(a, np.ndarray) and a.dtype == e.dtype
            and a.shape == e.shape and a.tobytes() == e.tobytes()):
        bad.append(f"{name}{shape}: got {getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')} {a!r:.80}")
check(not bad, f"{len(NUMPY)} dtypes x ranks 0-3 (and an empty tensor): dtype, shape and values equal numpy's "
      + "; ".join(bad[:4]))

# 2. Python -> saeflow -> Python: arrays of every dtype, through C parsing and re-encoding, bit-exact.
pin, pout = random.randrange(20000, 40000), random.randrange(40000, 60000)
p = subprocess.Popen([saeflow, "run", flow("loop.flow", f"""
stage feed = zmq_in {{
    endpoint = tcp://127.0.0.1:{pin}
}}
stage back = zmq_out {{
    input = feed
    endpoint = tcp://127.0.0.1:{pout}
}}
"""), "--no-progress"], stderr=subprocess.PIPE, text=True)
push = ctx.socket(zmq.PUSH)
push.connect(f"tcp://127.0.0.1:{pin}")
pull = ctx.socket(zmq.PULL)
pull.connect(f"tcp://127.0.0.1:{pout}")
rng = np.random.default_rng(0)
sent = []
for i, dt in enumerate(["<f4", "<f8", "<f2", "<i1", "<i2", "<i4", "<i8", "<u1", "<u2", "<u4", "<u8", "?"]):
    for shape in [(), (7,), (2, 3), (2, 0, 4), (1, 2, 3, 4)]:
        a = np.asarray(rng.standard_normal(shape) * 100).astype(dt)
        m = {"i": i, "dtype": dt, "a": a, "note": "日本語 ok", "labels": ["en", "ja"], "x": 0.5}
        sent.append(m)
        push.send(msgpack.packb(m, default=msgpack_numpy.encode, use_bin_type=True))
push.send(b"")
got = recv_all(pull)
p.wait(timeout=60)
check(p.returncode == 0 and len(got) == len(sent), f"{len(got)} of {len(sent)} messages came back through zmq_in -> zmq_out")
for a, b in zip(sent, got):
    if not isinstance(b["a"], np.ndarray):
        print("  not an array:", a["dtype"], a["a"].shape, type(b["a"]))
same = sum(1 for a, b in zip(sent, got) if isinstance(b["a"], np.ndarray) and b["a"].dtype == a["a"].dtype and b["a"].shape == a["a"].shape
           and b["a"].tobytes() == a["a"].tobytes() and b["note"] == a["note"] and b["labels"] == a["labels"] and b["x"] == 0.5)
check(same == len(sent), f"arrays of 12 dtypes and ranks 0-4 came back bit-exact ({same}/{len(sent)})")

# 2b. bf16 as msgpack-numpy sends it (a 2-byte void array: kind b'V', descr list) reaches C as BF16:
# the C side re-encodes it as '<V2', so the bits come back unchanged.
pin, pout = random.randrange(20000, 40000), random.randrange(40000, 60000)
p = subprocess.Popen([saeflow, "run", flow("bf16.flow", f"""
stage feed = zmq_in {{
    endpoint = tcp://127.0.0.1:{pin}
}}
stage back = zmq_out {{
    input = feed
    endpoint = tcp://127.0.0.1:{pout}
}}
"""), "--no-progress"], stderr=subprocess.PIPE, text=True)
push = ctx.socket(zmq.PUSH)
push.connect(f"tcp://127.0.0.1:{pin}")
pull = ctx.socket(zmq.PULL)
pull.connect(f"tcp://127.0.0.1:{pout}")
f32 = rng.standard_normal((3, 4)).astype(np.float32)
bf = (f32.view(np.uint32) >> 16).astype(np.uint16).view("V2")
push.send(msgpack.packb({"acts": bf}, default=msgpack_numpy.encode))
push.send(b"")
got = recv_all(pull)
p.wait(timeout=60)
back = got[0]["acts"] if got else None
check(p.returncode == 0 and back is not None and back.tobytes() == bf.tobytes() and back.shape == (3, 4),
      "bf16 sent by msgpack-numpy as void arrays crosses the C side bit-exact")

# 3. Python feeds tensor_gen-format messages that the C verify_sink checks.
pin = random.randrange(20000, 60000)
p = subprocess.Popen([saeflow, "run", flow("verify.flow", f"""
stage feed = zmq_in {{
    endpoint = tcp://127.0.0.1:{pin}
}}
stage check = verify_sink {{
    input = feed
    expect = 200
}}
"""), "--no-progress"], stderr=subprocess.PIPE, text=True)
push = ctx.socket(zmq.PUSH)
push.connect(f"tcp://127.0.0.1:{pin}")
for i in range(200):
    t = rng.standard_normal((4, 4)).astype(np.float32)
    push.send(msgpack.packb({"seq": i, "tensor": t, "checksum": fnv1a(t.tobytes()) >> 1}, default=msgpack_numpy.encode))
push.send(b"")
err = p.communicate(timeout=60)[1]
check(p.returncode == 0 and "verified 200 messages" in err, "C verify_sink accepts 200 numpy-encoded messages with Python checksums")

# 4. A corrupt frame from outside stops the pipeline with a clear error.
pin = random.randrange(20000, 60000)
p = subprocess.Popen([saeflow, "run", flow("bad.flow", f"""
stage feed = zmq_in {{
    endpoint = tcp://127.0.0.1:{pin}
}}
stage check = verify_sink {{
    input = feed
}}
"""), "--no-progress"], stderr=subprocess.PIPE, text=True)
push = ctx.socket(zmq.PUSH)
push.connect(f"tcp://127.0.0.1:{pin}")
good_frame = msgpack.packb({"seq": 0, "tensor": np.zeros((2, 2), np.float32), "checksum": 0}, default=msgpack_numpy.encode)
push.send(good_frame[:-5])
err = p.communicate(timeout=60)[1]
check(p.returncode == 1 and "feed: message 0" in err and "truncated or corrupt" in err, f"truncated frame: exit {p.returncode}, clear error: {err.strip().splitlines()[-1] if err.strip() else err}")

print(f"{failures} failures")
sys.exit(1 if failures else 0)
