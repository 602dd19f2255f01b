#!/usr/bin/python3
"""sae_trainer fed by Python through zmq_in with activations messages as core/MESSAGES.md defines
them (acts [B, T, d] float32 and float16, hook/layer/model/split): other splits are ignored, rows with
inf/NaN are dropped and counted, the metadata reaches the model's config, and the model is finite.

  test_python_feed.py SAEFLOW
"""
import json
import os
import random
import shutil
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
B, T, D = 4, 16, 32


def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)
    print("ok:", what)


def main():
    stages = subprocess.run([SAEFLOW, "stages", "--list"], capture_output=True, text=True).stdout
    if "zmq_in" not in stages or "sae_trainer" not in stages:
        print("SKIP: saeflow has no zmq_in / sae_trainer stage")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="sae_feed_")
    port = random.randrange(20000, 60000)
    flow = os.path.join(tmp, "feed.sf")
    with open(flow, "w") as f:
        f.write(f"""
stage feed = zmq_in {{
    endpoint = tcp://127.0.0.1:{port}
}}
stage sae = sae_trainer {{
    input = feed
    out_dir = "{tmp}/out"
    latents = 128
    k = 4
    batch = 256
    warmup_steps = 2
    metrics_every = 2
    split = train
    export = sparsify
}}
""")
    p = subprocess.Popen([SAEFLOW, "run", flow, "--no-progress"], stderr=subprocess.PIPE, text=True)
    push = zmq.Context().socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    rng = np.random.default_rng(3)
    train_rows = 0
    for i in range(44):
        acts = (rng.standard_normal((B, T, D)) + 1.0).astype(np.float32)
        split = "validation" if i % 11 == 10 else "train"
        if i == 3:
            acts[1, 5, 7] = np.nan
        if i == 7:
            acts[2, 0, 0] = np.inf
        if i % 2:  # half precision too (bf16 cannot be sent from msgpack-numpy: core reads only '<V2')
            acts = acts.astype(np.float16)
        msg = {"acts": acts, "tokens": np.zeros((B, T), np.int32), "doc_id": np.arange(B, dtype=np.int64),
               "pos": np.zeros(B, np.int32), "label": ["en"] * B, "split": split, "hook": "resid_post.3",
               "layer": 3, "model": "tiny-llama", "checkpoint": "step1000"}
        push.send(msgpack.packb(msg, default=msgpack_numpy.encode, use_bin_type=True))
        train_rows += B * T if split == "train" else 0
    push.send(b"")
    err = p.communicate(timeout=120)[1]
    check(p.returncode == 0, "the pipeline ran" + ("" if p.returncode == 0 else ":\n" + err))
    check("nonfinite_rows_dropped" in err and "other_split_messages" in err, "counters in the run summary")
    out = os.path.join(tmp, "out")
    cfg = json.load(open(os.path.join(out, "config.json")))
    tr = cfg["saeflow_training"]
    want_steps = (train_rows - 2) // 256
    check(tr["steps"] == want_steps and tr["tokens"] == want_steps * 256,
          f"{tr['steps']} steps over {train_rows} train rows minus 2 dropped")
    check(tr["hook"] == "resid_post.3" and tr["layer"] == 3 and tr["model"] == "tiny-llama"
          and tr["checkpoint"] == "step1000", "hook, layer, model, checkpoint recorded")
    check(os.path.exists(os.path.join(out, "sparsify", "resid_post.3", "sae.safetensors")),
          "sparsify export under the hook's name")
    lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    check(all(np.isfinite(l["loss"]) for l in lines) and lines[-1]["loss"] < lines[0]["loss"],
          "finite, falling loss")
    with open(os.path.join(out, "model.safetensors"), "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    weights = np.frombuffer(data[8 + n:], dtype=np.float32)
    check(np.isfinite(weights).all(), "every weight finite")
    shutil.rmtree(tmp)
    print("all feed checks passed")


if __name__ == "__main__":
    main()
