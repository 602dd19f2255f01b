"""Independent readers for the shard tests: a small safetensors parser on numpy, the expected
synthetic stream (the formula documented in shards_driver.c), and the driver's dump format."""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
import safetensors_np  # noqa: E402

read_safetensors = safetensors_np.read  # {name: (dtype, array)}, metadata
DRIVER = None
FAILED = False


def fail(msg):
    global FAILED
    FAILED = True
    print("FAIL:", msg)
    sys.exit(1)


def make_tmp(prefix):
    """A scratch directory, removed at exit unless a check failed (then kept for a look)."""
    d = tempfile.mkdtemp(prefix=prefix)
    atexit.register(lambda: FAILED or shutil.rmtree(d, ignore_errors=True))
    return d


def check(cond, msg):
    if not cond:
        fail(msg)


def load_dir(d):
    """Manifest plus, per split, the concatenated shard columns; checks size and CRC of each shard."""
    m = json.load(open(os.path.join(d, "manifest.json")))
    cols = {}
    for s in m["shards"]:
        p = os.path.join(d, s["file"])
        raw = open(p, "rb").read()
        check(len(raw) == s["bytes"], f"{p}: size {len(raw)} != manifest {s['bytes']}")
        check(zlib.crc32(raw) == s["crc32"], f"{p}: crc mismatch")
        t, meta = read_safetensors(p)
        check(meta["split"] == s["split"] and meta["format"] == "saeflow-shards", f"{p}: metadata {meta}")
        check(t["acts"][0] == m["dtype"] and t["acts"][1].shape == (s["count"], m["d"]), f"{p}: acts {t['acts'][0]}")
        c = cols.setdefault(s["split"], {k: [] for k in t})
        for k, (_, a) in t.items():
            c[k].append(a)
    return m, {sp: {k: np.concatenate(v) for k, v in c.items()} for sp, c in cols.items()}


def stream(nseqs):
    """The driver's sequences in order: dicts with seq, split, T, doc, pos, label, tokens, row0."""
    s = k = row = 0
    while s < nseqs:
        B, T = min(1 + k % 4, nseqs - s), 3 + (5 * k) % 6
        split = "validation" if k % 5 == 4 else "train"
        for _ in range(B):
            yield dict(seq=s, split=split, T=T, doc=1000003 * (s // 2) + 17, pos=64 * (s % 2),
                       label="ja" if (s // 2) % 3 == 0 else "en", tokens=(31 * s + np.arange(T)) % 50000, row0=row)
            s += 1
            row += T
        k += 1


def formula_acts(s, T, d):
    t = np.arange(T)[:, None]
    j = np.arange(d)[None, :]
    return (((131 * s + 17 * t + 7 * j) % 8191) / 8 - 500).astype(np.float32)


def expected_rows(nseqs, d, split, input_rows=None):
    """Per-row expected columns of one split: acts f32 [n, d], tokens, doc_id, pos, seq, label str."""
    acts, tok, doc, pos, seq, lab = [], [], [], [], [], []
    for q in stream(nseqs):
        if q["split"] != split:
            continue
        T = q["T"]
        if input_rows is None:
            acts.append(formula_acts(q["seq"], T, d))
        else:
            acts.append(input_rows[(q["row0"] + np.arange(T)) % len(input_rows)])
        tok.append(q["tokens"])
        doc += [q["doc"]] * T
        pos += list(q["pos"] + np.arange(T))
        seq += [q["seq"]] * T
        lab += [q["label"]] * T
    return dict(acts=np.concatenate(acts), tokens=np.concatenate(tok).astype(np.int32), doc_id=np.array(doc, np.int64),
                pos=np.array(pos, np.int32), seq=np.array(seq, np.int64), label=np.array(lab))


def read_dump(path, d):
    """Batches written by `shards_driver read --out`."""
    b = open(path, "rb").read()
    off, out = 0, []

    def take(dt, n):
        nonlocal off
        a = np.frombuffer(b, dtype=dt, count=n, offset=off)
        off += a.nbytes
        return a

    while off < len(b):
        B, T, ep = take("<i8", 3)
        out.append(dict(B=int(B), T=int(T), epoch=int(ep), acts=take("<f4", B * T * d).reshape(B, T, d),
                        tokens=take("<i4", B * T).reshape(B, T), doc_id=take("<i8", B), pos=take("<i4", B),
                        seq=take("<i8", B), label=take("u1", B)))
    return out


def run(*args, ok=True, **kw):
    p = subprocess.run([DRIVER, *map(str, args)], capture_output=True, text=True, **kw)
    for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):  # also where failure is expected
        if bad in p.stderr:
            fail(f"driver {' '.join(map(str, args))}: sanitizer report:\n{p.stderr}")
    if ok is not None and (p.returncode == 0) != ok:
        fail(f"driver {' '.join(map(str, args))}: exit {p.returncode}, expected {'0' if ok else 'failure'}\n"
             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def init():
    global DRIVER
    DRIVER = os.path.abspath(sys.argv[1])
