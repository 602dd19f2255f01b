#!/usr/bin/python3
"""sae_trainer fed by Python through zmq_in with activations messages as core/MESSAGES.md defines
them (acts [B, T, d] float32 and float16, hook/layer/model/split): other splits are ignored, rows with
inf/NaN are dropped and counted, the metadata reaches the model's config, and the model is finite.

Then, with activations known here: sae_eval's MSE, FVU, cosine, L0 and dead fraction against numpy
computed independently from the saved weights, and its refusal of activations of another hook,
checkpoint or model than the SAE was trained on (unless accept_sae_mismatch); and normalize=scalar's factor sqrt(d) / mean norm
from the norm_mean parameter, from a real shard_writer manifest (norm_manifest: the dataset-wide
mean, numpy) and, without either, from the first batch (numpy over its rows).

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


def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    out = {}
    for name, h in header.items():
        if name != "__metadata__":
            a, b = h["data_offsets"]
            out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype=np.float32).reshape(h["shape"])
    return out


def feed(tmp, body, msgs, ok=True):
    """Runs `zmq_in -> body` (body reads stage `feed`), sends msgs; -> stderr of the run (which must
    succeed, or with ok=False exit 1)."""
    port = random.randrange(20000, 60000)
    flow = os.path.join(tmp, "f.sf")
    with open(flow, "w") as f:
        f.write(f"stage feed = zmq_in {{\n    endpoint = tcp://127.0.0.1:{port}\n}}\n{body}")
    p = subprocess.Popen([SAEFLOW, "run", flow, "--no-progress"], stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    for m in msgs:
        push.send(msgpack.packb(m, default=msgpack_numpy.encode, use_bin_type=True))
    push.send(b"")
    err = p.communicate(timeout=120)[1]
    push.close(0)
    ctx.term()
    want = 0 if ok else 1
    check(p.returncode == want, f"pipeline exited {want}" + ("" if p.returncode == want else ":\n" + err))
    return err


def acts_msg(acts, split="train"):
    b, t = acts.shape[:2]
    return {"acts": acts, "tokens": np.zeros((b, t), np.int32), "doc_id": np.arange(b, dtype=np.int64),
            "pos": np.zeros(b, np.int32), "label": ["en"] * b, "split": split, "hook": "resid_post.3",
            "layer": 3, "model": "tiny-llama", "checkpoint": "step1000"}


def test_eval(tmp, sae_dir):
    """sae_eval against numpy from the saved weights (unit normalisation, as trained)."""
    rng = np.random.default_rng(11)
    acts = (rng.standard_normal((2, B, T, D)) * rng.uniform(0.5, 2, (2, B, T, 1)) + 1.0).astype(np.float32)
    out = os.path.join(tmp, "eval.json")
    feed(tmp, f"stage ev = sae_eval {{\n    input = feed\n    sae_dir = \"{sae_dir}\"\n    out = \"{out}\"\n}}\n",
         [acts_msg(a, "test") for a in acts])
    got = json.load(open(out))
    w = read_st(os.path.join(sae_dir, "model.safetensors"))
    k = json.load(open(os.path.join(sae_dir, "config.json")))["k"]
    x = acts.reshape(-1, D).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pre = np.maximum((x - w["b_dec"]) @ w["encoder.weight"].T.astype(np.float64) + w["encoder.bias"], 0)
    top = np.argsort(-pre, axis=1)[:, :k]
    z = np.zeros_like(pre)
    np.put_along_axis(z, top, np.take_along_axis(pre, top, 1), 1)
    xhat = z @ w["decoder.weight"].T.astype(np.float64) + w["b_dec"]
    err = ((x - xhat) ** 2).sum(1)
    want = {"tokens": len(x), "mse": err.mean(), "fvu": err.sum() / ((x - x.mean(0)) ** 2).sum(),
            "cosine": ((x * xhat).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(xhat, axis=1)).mean(),
            "l0": (z > 0).sum(1).mean(), "dead_fraction": ((z > 0).sum(0) == 0).mean()}
    for key, v in want.items():
        check(abs(got[key] - v) <= 1e-5 * max(1.0, abs(v)), f"sae_eval {key} {got[key]:.6g} = numpy {v:.6g}")
    check(0 < want["fvu"] < 1 and 0 < want["dead_fraction"] < 1, "non-trivial: some latents never fire on these 128 tokens")

    # Activations of another hook, checkpoint or model than the SAE's config records: refused
    # naming both sides, nothing written (it used to report an FVU for the wrong layer, exit 0);
    # accept_sae_mismatch = true evaluates anyway.
    for field, value in (("hook", "resid_post.2"), ("checkpoint", "step2000"), ("model", "other-llama")):
        other = os.path.join(tmp, f"eval-{field}.json")
        body = f"stage ev = sae_eval {{\n    input = feed\n    sae_dir = \"{sae_dir}\"\n    out = \"{other}\"\n}}\n"
        err = feed(tmp, body, [dict(acts_msg(a, "test"), **{field: value}) for a in acts], ok=False)
        check(value in err and "accept_sae_mismatch" in err and not os.path.exists(other),
              f"sae_eval on activations of another {field} ({value}) is refused naming it, no {os.path.basename(other)}")
    feed(tmp, body.replace("}\n", "    accept_sae_mismatch = true\n}\n"),
         [dict(acts_msg(a, "test"), model="other-llama") for a in acts])
    check(json.load(open(other))["tokens"] == len(x), "accept_sae_mismatch = true evaluates them anyway")


def test_scalar_norm(tmp):
    """normalize=scalar: the factor from norm_mean, a shard manifest, or the first batch."""
    rng = np.random.default_rng(5)
    # norms grow along the stream, so the first batch's mean norm is far from the dataset's
    acts = (rng.standard_normal((16, B, T, D)) * np.linspace(1, 4, 16)[:, None, None, None]).astype(np.float32)
    shards = os.path.join(tmp, "shards")
    feed(tmp, f"stage w = shard_writer {{\n    input = feed\n    dir = \"{shards}\"\n}}\n", [acts_msg(a) for a in acts])
    norms = np.linalg.norm(acts.reshape(-1, D).astype(np.float64), axis=1)
    runs = {"param": ("norm_mean = 3.25", np.sqrt(D) / 3.25, "norm_mean parameter"),
            "manifest": (f'norm_manifest = "{shards}"', np.sqrt(D) / norms.mean(), "manifest"),
            "first": ("", np.sqrt(D) / norms[:256].mean(), "first batch of 256 rows")}
    for name, (param, want, source) in runs.items():
        out = os.path.join(tmp, "scalar_" + name)
        flow = os.path.join(tmp, "s.sf")
        with open(flow, "w") as f:
            f.write(f"""
stage src = shard_source {{
    dir = "{shards}"
}}
stage sae = sae_trainer {{
    input = src
    out_dir = "{out}"
    latents = 64
    k = 4
    batch = 256
    max_tokens = 256
    normalize = scalar
    {param}
}}
""")
        p = subprocess.run([SAEFLOW, "run", flow, "--no-progress"], capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, f"scalar ({name}) ran" + ("" if p.returncode == 0 else ":\n" + p.stderr))
        cfg = json.load(open(os.path.join(out, "config.json")))
        got = cfg["saeflow_norm_scale"]
        check(abs(got - want) <= 1e-6 * want and cfg["saeflow_training"]["norm_scale_from"] == source,
              f"scalar scale from {source}: {got:.7g} = numpy {want:.7g}")
    check(abs(np.sqrt(D) / norms[:256].mean() / (np.sqrt(D) / norms.mean()) - 1) > 0.3,
          "(the first batch's estimate differs from the dataset-wide one)")


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
    test_eval(tmp, out)
    if "shard_writer" in stages:
        test_scalar_norm(tmp)
    else:
        print("skip the scalar normalisation checks: no shard_writer stage")
    shutil.rmtree(tmp)
    print("all feed checks passed")


if __name__ == "__main__":
    main()
