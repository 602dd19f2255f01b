#!/usr/bin/python3
"""feature_miner throughput, side by side with a PyTorch peer doing the paper's collection.

Both get the same activations (random, d=512) and the same random TopK SAE (8192 latents, k=32,
llm-jp-sae layout, unit-normalised input as the paper's code does):
  ours: the feature_miner stage's callbacks (fm_drive) in one streaming pass: encode, statistics,
        top-N heaps, reservoirs, languages, granularity, then the JSON files (html=false, and
        again with the HTML dashboard);
  peer: the paper's algorithm in PyTorch (llm-jp-sae collect_feature_pattern.py, re-written):
        pass 1 encodes everything for the per-feature max, pass 2 encodes again and keeps the first
        N sequences above 0.7 * max per feature, then one JSON per feature in the token_act schema.
Prints tokens/s of each and the ratio. Both use 2 threads.
usage: bench/miner_bench.py [FM_DRIVE] [--seqs 256]
"""
import argparse
import json
import math
import os
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

D, N, K, T, B = 512, 8192, 32, 128, 16
TOP_N, FRAC = 50, 0.7


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def peer(acts, tokens, W_enc, b_enc, b_dec, vocab, out_dir):
    """The paper's two passes over the test split, in PyTorch."""
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
                    if len(records[f]) < TOP_N:
                        records[f].append((toks, pre[s, :, f].tolist()))
    for f, rec in enumerate(records):
        if not rec:
            continue
        mx = max(max(a) for _, a in rec)
        token_act = [[[t, 0 if a < 0 else math.ceil(a * 10 / mx)] for t, a in zip(toks, acts_)] for toks, acts_ in rec]
        with open(os.path.join(out_dir, f"{f}.json"), "w") as fp:
            json.dump({"token_act": token_act}, fp, ensure_ascii=False, indent=4)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fm_drive", nargs="?", default="build/stages/feature_miner/fm_drive")
    ap.add_argument("--seqs", type=int, default=256)
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
    write_safetensors(os.path.join(sae, "model.safetensors"),
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
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    results = {}
    for html in ("false", "true"):
        t0 = time.perf_counter()
        subprocess.run([args.fm_drive, "stage", msgs, f"sae={sae}", f"out={tmp}/ours_{html}",
                        f"tokenizer={tmp}/v.vocab", f"html={html}", "drop_bos=false"], check=True, env=env)
        results[f"ours (html={html})"] = time.perf_counter() - t0
    os.makedirs(f"{tmp}/peer")
    t0 = time.perf_counter()
    peer(acts, tokens, W_dec, b_enc, b_dec, [" " + v for v in vocab], f"{tmp}/peer")
    results["peer (PyTorch, paper's two passes)"] = time.perf_counter() - t0
    print(f"{args.seqs} sequences x {T} tokens = {n_tok} tokens; SAE d={D} n={N} k={K}; top_n={TOP_N}")
    peer_s = results["peer (PyTorch, paper's two passes)"]
    for name, s in results.items():
        print(f"{name:40s} {s:8.2f} s  {n_tok / s:10.0f} tokens/s  speed-up vs peer x{peer_s / s:.2f}")


if __name__ == "__main__":
    sys.exit(main())
