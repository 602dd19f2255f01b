#!/usr/bin/python3
"""sae_trainer resumes by sequence key: a run stopped after 2 steps (max_tokens, in the middle of a
sequence) and resumed with the same sequences arriving in another order (as two forward replicas
deliver them) trains every row exactly once, like an uninterrupted run: the checkpoints' lists of
trained sequences (trained_doc, trained_pos, trained_rows) equal the input's, counted here from what
Python sent. Skipping by count would train some rows twice and others never.

  test_resume_order.py SAEFLOW
"""
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

try:
    import msgpack
    import msgpack_numpy
    import zmq
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

SAEFLOW = os.path.abspath(sys.argv[1])
S, T, D, B, BATCH = 64, 20, 32, 4, 256  # 1280 rows = 5 steps; 2 steps end inside sequence 26


def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)
    print("ok:", what)


def read_st(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    dt = {"I64": np.int64, "I32": np.int32, "F32": np.float32}
    out = {k: np.frombuffer(data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], dt[v["dtype"]])
           for k, v in header.items() if v["dtype"] in dt}
    return out, meta


def run(tmp, out, order, extra=""):
    port = random.randrange(20000, 60000)
    flow = os.path.join(tmp, out + ".sf")
    open(flow, "w").write(f"""
stage feed = zmq_in {{
    endpoint = tcp://127.0.0.1:{port}
}}
stage sae = sae_trainer {{
    input = feed
    out_dir = "{tmp}/{out}"
    latents = 128
    k = 4
    batch = {BATCH}
    warmup_steps = 2
    checkpoint_every = 0
    {extra}
}}
""")
    p = subprocess.Popen([SAEFLOW, "run", flow, "--no-progress"], stderr=subprocess.PIPE, text=True)
    push = zmq.Context().socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    rng = np.random.default_rng(1)
    acts = (rng.standard_normal((S, T, D)) + 0.5).astype(np.float32)
    docs, pos = 1000 + np.arange(S, dtype=np.int64) // 2, (np.arange(S, dtype=np.int32) % 2) * T
    for i in range(0, S, B):
        sel = order[i:i + B]
        msg = {"acts": acts[sel], "tokens": np.zeros((len(sel), T), np.int32), "doc_id": docs[sel],
               "pos": pos[sel], "label": ["en"] * len(sel), "split": "train", "hook": "resid_post.1", "layer": 1,
               "model": "m", "checkpoint": "c"}
        push.send(msgpack.packb(msg, default=msgpack_numpy.encode, use_bin_type=True))
    push.send(b"")
    err = p.communicate(timeout=120)[1]
    check(p.returncode == 0, f"{out}: the pipeline ran" + ("" if p.returncode == 0 else ":\n" + err))
    return err, set(zip(docs.tolist(), pos.tolist()))


def trained(tmp, out):
    t, meta = read_st(os.path.join(tmp, out, "checkpoint.safetensors"))
    cfg = json.load(open(os.path.join(tmp, out, "config.json")))["saeflow_training"]
    return list(zip(t["trained_doc"].tolist(), t["trained_pos"].tolist(), t["trained_rows"].tolist())), cfg


def main():
    stages = subprocess.run([SAEFLOW, "stages"], capture_output=True, text=True).stdout
    if "zmq_in" not in stages or "sae_trainer" not in stages:
        print("SKIP: saeflow has no zmq_in / sae_trainer stage")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="sae_resume_order_")
    first, second = list(range(S)), random.Random(7).sample(range(S), S)
    _, keys = run(tmp, "full", first)
    full, cfg = trained(tmp, "full")
    want = sorted((d, p, T) for d, p in keys)
    check(full == want and cfg["tokens"] == S * T, "uninterrupted run: every sequence trained once, whole")

    run(tmp, "two", first, f"max_tokens = {2 * BATCH}")
    part, cfg = trained(tmp, "two")
    sent = [(1000 + q // 2, (q % 2) * T) for q in first]
    n_whole, rest = divmod(2 * BATCH, T)
    want_part = sorted([(d, p, T) for d, p in sent[:n_whole]] + [(*sent[n_whole], rest)])
    check(part == want_part and cfg["tokens"] == 2 * BATCH,
          f"stopped after 2 steps: {n_whole} whole sequences and {rest} rows of one more trained")

    err, _ = run(tmp, "two", second, "resume = true")
    check(f"skipping {n_whole + 1} already-trained sequences" in err, "the resumed run says what it skips")
    skipped = re.search(r"trained_rows_skipped = (\d+)", err)
    check(skipped and int(skipped.group(1)) == 2 * BATCH, "it skips exactly the rows trained before")
    both, cfg = trained(tmp, "two")
    check(both == full and cfg["tokens"] == S * T and cfg["steps"] == S * T // BATCH,
          "resumed in another order: the same sequences as the uninterrupted run, every row trained once")
    shutil.rmtree(tmp)
    print("all resume-order checks passed")


if __name__ == "__main__":
    main()
