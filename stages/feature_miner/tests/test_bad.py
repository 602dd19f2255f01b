#!/usr/bin/python3
"""Bad input is a clear error, never a crash: activations messages with a wrong width, missing or
mismatched fields, and bad parameters, each through fm_drive (exit 1 and a message naming the
problem); NaN and ±Inf activations (skipped and counted), an empty label and an empty batch are accepted. Under ASan this also checks for memory
errors on every error path.
usage: test_bad.py FM_DRIVE
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import msgpack
import msgpack_numpy
import numpy as np

import planted

D = planted.D


def good(B=2, T=5):
    rng = np.random.default_rng(0)
    return {"acts": rng.standard_normal((B, T, D)).astype(np.float32),
            "tokens": rng.integers(3, 20, (B, T)).astype(np.int32),
            "doc_id": np.arange(B, dtype=np.int64), "pos": np.zeros(B, np.int32), "label": ["en"] * B}


def main():
    drive = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="fm_bad_")
    fx = planted.make(tmp)
    failures = []

    def run(msg, expect_error, **overrides):
        path = os.path.join(tmp, "m.bin")
        with open(path, "wb") as f:
            for one in msg if isinstance(msg, list) else [msg]:
                blob = one if isinstance(one, bytes) else msgpack.packb(one, default=msgpack_numpy.encode)
                f.write(struct.pack("<I", len(blob)) + blob)
        out = os.path.join(tmp, "out")
        params = {"sae": fx["sae_dir"], "out": out, "tokenizer": fx["vocab_path"], "overwrite": "true", **overrides}
        try:
            r = subprocess.run([drive, "stage", path, *[f"{k}={v}" for k, v in params.items()]],
                               capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            failures.append(f"{expect_error or 'accepted'}: fm_drive still running after 60 s (a hang)")
            return
        if expect_error:
            ok = r.returncode == 1 and expect_error in r.stderr
        else:
            ok = r.returncode == 0
        if not ok:
            failures.append(f"{expect_error or 'accepted'}: exit {r.returncode}, stderr {r.stderr.strip()[:300]!r}")

    m = good()
    m["acts"] = m["acts"][:, :, :D - 1].copy()
    run(m, "want [B, T, 16]")
    m = good()
    m["acts"] = m["acts"][0]
    run(m, "want F32, BF16 or F16 [B, T, d]")
    m = good()
    del m["tokens"]
    run(m, "'tokens'")
    m = good()
    m["tokens"] = m["tokens"][:, :3].copy()
    run(m, "'tokens'")
    m = good()
    m["tokens"] = m["tokens"].astype(np.float32)
    run(m, "'tokens': want int32")
    m = good()
    m["label"] = ["en"]
    run(m, "'label'")
    m = good()
    m["doc_id"] = np.zeros(5, np.int64)
    run(m, "'doc_id'")
    m = good()
    m["tokens"] = m["tokens"].astype(np.int64)  # MESSAGES.md: tokens are int32
    run(m, "'tokens': want int32")
    m = good()
    m["doc_id"] = m["doc_id"].astype(np.int32)  # MESSAGES.md: doc_id is int64
    run(m, "'doc_id': want int64")
    run(msgpack.packb([1, 2]), "not a MessagePack map")
    run(b"\x93\x01\x02", "not valid MessagePack")
    run(good(), "top_n", top_n=0)
    run(good(), "parameter 'sampling': 'bogus'", sampling="bogus")
    run(good(), "parameter 'max_from': is read by sampling = paper", max_from="/nonexistent/maxima.json")
    run(good(), "/nonexistent/maxima.json", sampling="paper", max_from="/nonexistent/maxima.json")
    run(good(), "sampling = paper-max first", sampling="paper")  # no pass 1 in out
    bad_maxima = os.path.join(tmp, "maxima.json")
    for content, error in (({"schema": "saeflow.feature_miner.summary/1", "n_features": planted.N}, "not a maxima file"),
                           ({"schema": "saeflow.feature_miner.maxima/1", "n_features": 3, "tokens": 1, "sequences": 1,
                             "max_preact": [1, 1, 1]}, "maxima of 3 features"),
                           ({"schema": "saeflow.feature_miner.maxima/1", "n_features": planted.N, "tokens": 1,
                             "sequences": 1, "max_preact": [1] * (planted.N - 1) + [-1]}, "not a number >= 0")):
        with open(bad_maxima, "w") as f:
            json.dump(content, f)
        run(good(), error, sampling="paper", max_from=bad_maxima)
    run(good(), "/nonexistent", sae="/nonexistent")
    run(good(), "/nonexistent.vocab", tokenizer="/nonexistent.vocab")
    a, b = good(), good()
    a["hook"], b["hook"] = "resid_post.1", "resid_post.2"
    run([a, b], "two hooks")
    run([a, b], None, hook="resid_post.2")
    with open(os.path.join(tmp, "out", "summary.json")) as f:
        summ = json.load(f)
    if summ["tokens"] != 2 * 5 or summ["hook"] != "resid_post.2":
        failures.append(f"hook=resid_post.2 mined {summ['tokens']} tokens of hook {summ['hook']!r}, want 10 of resid_post.2")
    run([a, b], None, hook="hidden_states.3")  # Hugging Face's name of resid_post.2
    with open(os.path.join(tmp, "out", "summary.json")) as f:
        summ = json.load(f)
    if summ["tokens"] != 2 * 5 or summ["hook"] != "resid_post.2":
        failures.append(f"hook=hidden_states.3 mined {summ['tokens']} tokens of hook {summ['hook']!r}, want 10 of resid_post.2")
    m = good()
    m["acts"][0, 1, :] = np.nan
    run(m, None)
    # An SAE without input normalisation passes an Inf activation on as Inf latents (+Inf once hung
    # the histogram); they are skipped and counted. With the unit norm they turn NaN: also accepted.
    raw_sae = os.path.join(tmp, "sae-raw")
    shutil.copytree(fx["sae_dir"], raw_sae)
    with open(os.path.join(raw_sae, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(raw_sae, "config.json"), "w") as f:
        json.dump({**cfg, "saeflow_normalize": "none"}, f)
    m = good()
    m["acts"][0, 1, :] = np.inf
    run(m, None)
    for bad in (np.inf, -np.inf):
        m = good()
        m["acts"][0, 1, 0] = bad
        m["acts"][1, 2, 3] = bad
        run(m, None, sae=raw_sae)
        with open(os.path.join(tmp, "out", "summary.json")) as f:
            summ = json.load(f)
        if not summ["nonfinite_values"] > 0 or not all(np.isfinite(x["max_act"]) for x in summ["features"]):
            failures.append(f"acts with {bad}: nonfinite_values {summ['nonfinite_values']}, maxima "
                            f"{[x['max_act'] for x in summ['features']][:5]}: want > 0 skipped and finite maxima")
    # An SAE whose config records another hook or checkpoint than the activations': an error naming
    # both sides and the override; the override mines them with a warning. Unrecorded: not compared.
    trained = os.path.join(tmp, "sae-trained")
    shutil.copytree(fx["sae_dir"], trained)
    with open(os.path.join(trained, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(trained, "config.json"), "w") as f:
        json.dump({**cfg, "saeflow_training": {"hook": "resid_post.1", "checkpoint": "step100", "model": "planted"}}, f)
    m = good()
    m.update(hook="resid_post.2", checkpoint="step100", model="planted")
    run(m, "trained on hook resid_post.1, but these activations are of hook resid_post.2", sae=trained)
    run(m, None, sae=trained, accept_sae_mismatch="true")
    m.update(hook="resid_post.1", checkpoint="step200")
    run(m, "trained on checkpoint step100, but these activations are of checkpoint step200", sae=trained)
    m.update(checkpoint="step100", model="other-model")
    run(m, "trained on model planted, but these activations are of model other-model", sae=trained)
    m.update(model="planted")
    run(m, None, sae=trained)
    m = good()
    m["label"] = ["", "ja"]
    run(m, None)
    empty = {"acts": np.zeros((0, 5, D), np.float32), "tokens": np.zeros((0, 5), np.int32),
             "doc_id": np.zeros(0, np.int64), "pos": np.zeros(0, np.int32), "label": []}
    run([empty, good()], None)
    run([empty], "no activations to mine arrived")  # it used to write an empty summary, exit 0
    m = good()
    m["hook"] = "resid_post.1"
    run(m, "none of the hook parameter's", hook="resid_post.2")

    # A finished run is refused unless overwrite = true; then it is replaced whole (a stale
    # per-feature file of the previous run is gone), and a run that fails leaves it intact.
    out = os.path.join(tmp, "out")
    stale = os.path.join(out, "features", "stale-from-an-earlier-run.json")
    open(stale, "w").write("{}")
    with open(os.path.join(out, "summary.json"), "rb") as f:
        finished = f.read()
    run(good(), "already holds a finished mining run (summary.json): set overwrite = true", overwrite="false")
    run([empty], "no activations to mine arrived")  # a failed overwrite ...
    with open(os.path.join(out, "summary.json"), "rb") as f:
        if f.read() != finished or not os.path.exists(stale):
            failures.append("a refused or failed run changed the finished output")
    run(good(B=3), None)
    with open(os.path.join(out, "summary.json")) as f:
        if json.load(f)["tokens"] != 15 or os.path.exists(stale) or os.path.exists(out + ".partial"):
            failures.append("overwrite = true did not replace the output whole (stale file kept, or old summary)")

    for msg in failures:
        print("FAIL:", msg)
    print("ok" if not failures else "FAIL")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
