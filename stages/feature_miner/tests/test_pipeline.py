#!/usr/bin/python3
"""feature_miner inside a real pipeline: zmq_in -> forward -> feature_miner, run by `saeflow run`
on one of stages/forward's fixture checkpoints (a tiny Qwen2 with an untied LM head), then
`saeflow report` on the run directory. Checks that the plugin loads and runs in the runtime, that
every token arrives (BOS dropped by forward), and the logit effects against NumPy:
W_U (g * w_dec) with W_U and the final norm gain g read from the checkpoint's safetensors.
usage: test_pipeline.py SAEFLOW_EXE FORWARD_FIXTURES_DIR
(77 without pyzmq / msgpack_numpy, or when the bridge or forward stage is not built)
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

try:
    import msgpack
    import msgpack_numpy
    import zmq
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

import planted

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
import safetensors_np  # noqa: E402

SAEFLOW, FIXTURES = sys.argv[1], sys.argv[2]
D, N, K, LOGIT_TOP = 32, 40, 4, 5


def main():
    listed = subprocess.run([SAEFLOW, "stages", "--list"], capture_output=True, text=True).stdout
    missing = [st for st in ("zmq_in", "forward", "feature_miner") if f"  {st} " not in listed]
    if missing:
        print(f"skip: stages not built: {missing}")
        return 77
    model = os.path.join(FIXTURES, "qwen2_bias")
    tmp = tempfile.mkdtemp(prefix="fm_pipeline_")
    rng = np.random.default_rng(3)
    W_dec = rng.standard_normal((N, D)).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    sae = os.path.join(tmp, "sae")
    os.makedirs(sae)
    with open(os.path.join(sae, "config.json"), "w") as f:
        json.dump({"d_in": D, "num_latents": N, "k": K, "model_type": "topk_sae"}, f)
    safetensors_np.write(os.path.join(sae, "model.safetensors"),
                              {"encoder.weight": W_dec, "encoder.bias": np.zeros(N, np.float32),
                               "decoder.weight": W_dec.T.copy(), "b_dec": np.zeros(D, np.float32)})
    out = os.path.join(tmp, "run")
    ep = f"ipc://{tmp}/in"
    pipe = os.path.join(tmp, "mine.saeflow")
    with open(pipe, "w") as f:
        f.write(f"""
stage src = zmq_in {{
    endpoint = "{ep}"
}}
stage fwd = forward {{
    input = src
    model = "{model}"
    hooks = "resid_post.1"
    threads = 1
}}
stage mine = feature_miner {{
    input = fwd
    sae = "{sae}"
    out = "{out}"
    model = "{model}"
    top_n = 4
    logit_top = {LOGIT_TOP}
}}
""")
    proc = subprocess.Popen([SAEFLOW, "run", pipe, "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(ep)
    B, T, n_msgs = 3, 12, 4
    for m in range(n_msgs):
        tokens = rng.integers(3, 96, (B, T)).astype(np.int32)
        tokens[:, 0] = 1  # BOS
        msg = {"tokens": tokens, "doc_id": np.arange(m * B, (m + 1) * B, dtype=np.int64),
               "pos": np.zeros(B, np.int32), "label": ["en", "ja", "en"], "split": "test"}
        push.send(msgpack.packb(msg, default=msgpack_numpy.encode))
    push.send(b"")
    try:
        log, _ = proc.communicate(timeout=120)
    finally:
        push.close(0)
        ctx.term()
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    check(proc.returncode == 0, f"saeflow run exit {proc.returncode}:\n{log}")
    if proc.returncode == 0:
        with open(os.path.join(out, "summary.json")) as f:
            summ = json.load(f)
        check(summ["tokens"] == B * (T - 1) * n_msgs, f"tokens {summ['tokens']} != {B * (T - 1) * n_msgs}")
        check(summ["hook"] == "resid_post.1", f"hook {summ['hook']!r}")
        check(summ["alive"] > 0, "no feature fired")
        w = safetensors_np.read_f32(os.path.join(model, "model.safetensors"))
        W_U, g = w["lm_head.weight"], w["model.norm.weight"]
        for feat in summ["features"]:
            i = feat["id"]
            with open(os.path.join(out, "features", f"{i}.json")) as f:
                lg = json.load(f)["logits"]
            ref = W_U @ (g * W_dec[i])
            top, bot = np.argsort(-ref)[:LOGIT_TOP], np.argsort(ref)[:LOGIT_TOP]
            check([p[2] for p in lg["positive"]] == list(top), f"f{i} promoted {[p[2] for p in lg['positive']]} != {list(top)}")
            check([p[2] for p in lg["negative"]] == list(bot), f"f{i} suppressed {[p[2] for p in lg['negative']]} != {list(bot)}")
            check(np.allclose([p[1] for p in lg["positive"]], ref[top], rtol=1e-4, atol=1e-5), f"f{i} promoted values")
        r = subprocess.run([SAEFLOW, "report", out, "--out", os.path.join(tmp, "report")], capture_output=True, text=True)
        check(r.returncode == 0 and r.stdout.strip().endswith("report.html"), f"saeflow report: {r.returncode} {r.stderr}")

    for msg in failures:
        print("FAIL:", msg)
    print("ok" if not failures else "FAIL")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
