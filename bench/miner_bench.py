#!/usr/bin/python3
"""feature_miner throughput, side by side with a PyTorch peer doing the paper's collection.

Both get the same activations (random, d=512) and the same random TopK SAE (8192 latents, k=32,
llm-jp-sae layout, unit-normalised input as the paper's code does):
  ours: the feature_miner stage's callbacks (fm_drive) in one streaming pass: encode, statistics,
        top-N heaps, languages, granularity, then the JSON files (html=false, and again with the
        HTML dashboard); reservoir=0, as the peer collects no quantile examples;
  peer: the paper's algorithm in PyTorch (llm-jp-sae collect_feature_pattern.py, re-written):
        pass 1 encodes everything for the per-feature max, pass 2 encodes again and keeps the first
        N sequences above 0.7 * max per feature, then one JSON per feature in the token_act schema.
Prints, for each, the streaming time (encode + mining; the peer's two passes) with tokens/s, the
time to write the results, the total wall time and CPU time (user + system, all threads), and the
speed-ups over the peer. Both use 2 threads. CPU time is the steadier number on a shared machine.
usage: bench/miner_bench.py [FM_DRIVE] [--seqs 128] [--top-n 20]
"""
import argparse
import json
import math
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_CORETYPE", "SKYLAKEX")
import msgpack  # noqa: E402
import msgpack_numpy  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import safetensors_np  # noqa: E402

D, N, K, T, B = 512, 8192, 32, 64, 16
FRAC = 0.7


def peer(acts, tokens, W_enc, b_enc, b_dec, vocab, out_dir, top_n):
    """The paper's two passes over the test split, in PyTorch; returns (passes s, writing s, CPU s)."""
    t0, c0 = time.perf_counter(), time.process_time()
    enc_w, enc_b, bd = torch.from_numpy(W_enc), torch.from_numpy(b_enc), torch.from_numpy(b_dec)

    def encode(x):
        x = torch.from_numpy(x).reshape(-1, D)
        x = x / x.norm(dim=-1, keepdim=True)
        pre = (x - bd) @ enc_w.T + enc_b
        top = torch.relu(pre).topk(K, dim=-1)
        return pre, top.values, top.indices

    with torch.no_grad():
        max_act = torch.zeros(N)
        for b0 in range(0, len(acts), B):
            pre, _, _ = encode(acts[b0:b0 + B])
            max_act = torch.maximum(max_act, pre.max(dim=0).values)
        thr = max_act * FRAC
        records = [[] for _ in range(N)]
        for b0 in range(0, len(acts), B):
            pre, vals, idx = encode(acts[b0:b0 + B])
            pre = pre.reshape(-1, T, N)
            vals, idx = vals.reshape(-1, T, K), idx.reshape(-1, T, K)
            exceed = thr[idx] < vals
            for s in range(pre.shape[0]):
                toks = [vocab[t] for t in tokens[b0 + s]]
                for f in idx[s][exceed[s]].unique().tolist():
                    if len(records[f]) < top_n:
                        records[f].append((toks, pre[s, :, f].tolist()))
    t1 = time.perf_counter()
    for f, rec in enumerate(records):
        if not rec:
            continue
        mx = max(max(a) for _, a in rec)
        token_act = [[[t, 0 if a < 0 else math.ceil(a * 10 / mx)] for t, a in zip(toks, acts_)] for toks, acts_ in rec]
        with open(os.path.join(out_dir, f"{f}.json"), "w") as fp:
            json.dump({"token_act": token_act}, fp, ensure_ascii=False, indent=4)
    return t1 - t0, time.perf_counter() - t1, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fm_drive", nargs="?", default="build/stages/feature_miner/fm_drive")
    ap.add_argument("--seqs", type=int, default=128)
    ap.add_argument("--top-n", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    tmp = tempfile.mkdtemp(prefix="miner_bench_")
    W_dec = rng.standard_normal((N, D)).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    b_enc = np.zeros(N, np.float32)
    b_dec = np.zeros(D, np.float32)
    sae = os.path.join(tmp, "sae")
    os.makedirs(sae)
    with open(os.path.join(sae, "config.json"), "w") as f:
        json.dump({"d_in": D, "num_latents": N, "k": K, "model_type": "topk_sae"}, f)
    safetensors_np.write(os.path.join(sae, "model.safetensors"),
                      {"encoder.weight": W_dec, "encoder.bias": b_enc, "decoder.weight": W_dec.T.copy(), "b_dec": b_dec})
    vocab = [f"tok{i}" for i in range(1000)]
    with open(os.path.join(tmp, "v.vocab"), "w") as f:
        f.writelines(f"▁{v}\t0\n" for v in vocab)
    acts = rng.standard_normal((args.seqs, T, D)).astype(np.float32)
    tokens = rng.integers(0, 1000, (args.seqs, T)).astype(np.int32)
    msgs = os.path.join(tmp, "acts.bin")
    with open(msgs, "wb") as f:
        for b0 in range(0, args.seqs, B):
            blob = msgpack.packb({"acts": acts[b0:b0 + B], "tokens": tokens[b0:b0 + B],
                                  "doc_id": np.arange(b0, b0 + B, dtype=np.int64), "pos": np.zeros(B, np.int32),
                                  "label": ["en"] * B}, default=msgpack_numpy.encode)
            f.write(struct.pack("<I", len(blob)) + blob)
    n_tok = args.seqs * T
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", FM_DRIVE_TIMES="1")
    results = {}
    for html in ("false", "true"):
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([args.fm_drive, "stage", msgs, f"sae={sae}", f"out={tmp}/ours_{html}",
                            f"tokenizer={tmp}/v.vocab", f"html={html}", "drop_bos=false", f"top_n={args.top_n}", "reservoir=0"],
                           check=True, env=env, capture_output=True, text=True)
        line = [x for x in r.stderr.splitlines() if x.startswith("fm_drive: stream")][0].split()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
        results[f"ours, html={html}"] = (float(line[2]), float(line[7]), cpu)
        shutil.rmtree(f"{tmp}/ours_{html}")
    os.makedirs(f"{tmp}/peer")
    results["peer: PyTorch, the paper's two passes"] = peer(acts, tokens, W_dec, b_enc, b_dec, [" " + v for v in vocab],
                                                           f"{tmp}/peer", args.top_n)
    shutil.rmtree(tmp)
    print(f"{args.seqs} sequences x {T} tokens = {n_tok} tokens; SAE d={D} n={N} k={K}; top_n={args.top_n}")
    print(f"{'':38s} {'stream s':>9s} {'tokens/s':>9s} {'output s':>9s} {'total s':>8s} {'vs peer':>8s} {'CPU s':>7s} {'vs peer':>8s}")
    p_stream, p_end, p_cpu = results["peer: PyTorch, the paper's two passes"]
    for name, (stream, end, cpu) in results.items():
        print(f"{name:38s} {stream:9.2f} {n_tok / stream:9.0f} {end:9.2f} {stream + end:8.2f} "
              f"{'x%.2f' % ((p_stream + p_end) / (stream + end)):>8s} {cpu:7.2f} {'x%.2f' % (p_cpu / cpu):>8s}")


if __name__ == "__main__":
    sys.exit(main())
