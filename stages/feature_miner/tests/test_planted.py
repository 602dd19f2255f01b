#!/usr/bin/python3
"""Planted features, end to end through the feature_miner stage (driven by fm_drive).

An SAE in the paper's llm-jp-sae layout is built with known decoder directions; each token's
activation is the sum of the directions of the latents planted on it, plus noise. Known tokens
therefore fire known latents:
  latent 0  "▁dog"                          English, token-level
  latent 1  "犬"                            Japanese, token-level
  latent 2  "▁dog" "▁cat" "犬" "猫"         bilingual, concept-level
  latent 3  "1" (only in English text)      English through the digit rule
  latent 4  "2" (only in Japanese text)     Japanese through the digit rule
  latent 5  "、"                             Japanese (paper: non-ASCII; script: defers to kanji)
BOS carries a large latent-0 activation that must be dropped, as the paper drops position 0.

Independent reference: PyTorch encodes the same activations the way llm-jp-sae's TopKSAE does
(x / ||x||, relu(encoder(x - b_dec)), topk) and the paper's two-pass collection is re-run on it.
usage: test_planted.py FM_DRIVE
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import msgpack
import msgpack_numpy
import numpy as np
import torch

D, N, K = 16, 24, 4
TOP_N, FRAC = 5, 0.7

VOCAB = ["<unk>", "<s>", "</s>", "▁the", "▁dog", "▁cat", "▁is", "▁big", "犬", "猫", "は", "大きい",
         "1", "2", "、", "。", "▁a", "です", "▁small", "小さい"]
TOK = {p: i for i, p in enumerate(VOCAB)}
PLANT = {"▁dog": [(0, 3.0), (2, 1.5)], "犬": [(1, 3.0), (2, 1.6)], "▁cat": [(2, 1.4)], "猫": [(2, 1.3)],
         "1": [(3, 2.0)], "2": [(4, 2.0)], "、": [(5, 2.5)], "<s>": [(0, 9.0)]}


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


def main():
    drive = sys.argv[1]
    rng = np.random.default_rng(1)
    tmp = tempfile.mkdtemp(prefix="fm_planted_")
    # Decoder directions: orthonormal for the planted latents, random unit for the rest.
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    W_dec = np.concatenate([q.T[:6], rng.standard_normal((N - 6, D))]).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    W_enc = W_dec.copy()
    b_enc = np.full(N, -0.05, np.float32)
    b_dec = np.zeros(D, np.float32)
    sae_dir = os.path.join(tmp, "sae")
    os.makedirs(sae_dir)
    with open(os.path.join(sae_dir, "config.json"), "w") as f:
        json.dump({"d_in": D, "num_latents": N, "k": K, "model_type": "topk_sae"}, f)
    write_safetensors(os.path.join(sae_dir, "model.safetensors"),
                      {"encoder.weight": W_enc, "encoder.bias": b_enc, "decoder.weight": W_dec.T.copy(), "b_dec": b_dec})
    vocab_path = os.path.join(tmp, "planted.vocab")
    with open(vocab_path, "w") as f:
        for p in VOCAB:
            f.write(f"{p}\t0\n")

    # Sequences: English and Japanese sentences with planted tokens in random places.
    en_words = ["▁the", "▁dog", "▁cat", "▁is", "▁big", "▁a", "▁small", "1"]
    ja_words = ["犬", "猫", "は", "大きい", "、", "。", "です", "小さい", "2"]
    T, B, n_batches = 10, 6, 14
    seqs = []
    for s in range(B * n_batches):
        lang = "en" if s % 2 == 0 else "ja"
        words = en_words if lang == "en" else ja_words
        toks = ["<s>"] + [words[i] for i in rng.integers(0, len(words), T - 1)]
        if lang == "en" and toks[1] == "1":
            toks[1] = "▁the"  # "1" after BOS would have no language to defer to
        if lang == "ja" and toks[1] in ("2", "、"):
            toks[1] = "犬"
        seqs.append((lang, [TOK[t] for t in toks]))

    def embed(tok_id):
        x = rng.standard_normal(D).astype(np.float32) * 0.02
        x += q.T[6 + tok_id % 10] * 0.3  # a token-specific direction no planted latent reads
        for lat, mag in PLANT.get(VOCAB[tok_id], []):
            x += W_dec[lat] * mag * (0.6 + 0.8 * rng.random())
        return x

    acts = np.stack([np.stack([embed(t) for t in ids]) for _, ids in seqs]).astype(np.float32)
    tokens = np.array([ids for _, ids in seqs], np.int32)
    msgs_path = os.path.join(tmp, "acts.bin")
    with open(msgs_path, "wb") as f:
        for b0 in range(0, len(seqs), B):
            msg = {"acts": acts[b0:b0 + B], "tokens": tokens[b0:b0 + B],
                   "doc_id": np.arange(b0, b0 + B, dtype=np.int64), "pos": np.zeros(B, np.int32),
                   "label": [seqs[i][0] for i in range(b0, b0 + B)], "split": "test",
                   "hook": "resid_post.3", "layer": 3, "model": "planted", "checkpoint": "step100"}
            blob = msgpack.packb(msg, default=msgpack_numpy.encode, use_bin_type=True)
            f.write(struct.pack("<I", len(blob)) + blob)

    # Reference: llm-jp-sae's TopKSAE.encode on x / ||x||, BOS (position 0) dropped.
    x = torch.from_numpy(acts[:, 1:, :].reshape(-1, D))
    x = x / x.norm(dim=-1, keepdim=True)
    pre = torch.relu((x - torch.from_numpy(b_dec)) @ torch.from_numpy(W_enc).T + torch.from_numpy(b_enc))
    top = pre.topk(K, dim=-1)
    dense = torch.zeros_like(pre).scatter_(-1, top.indices, top.values).reshape(len(seqs), T - 1, N).numpy()
    peak = dense.max(axis=1)  # [S, N]
    ref_max = peak.max(axis=0)

    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    def run(out, *extra):
        r = subprocess.run([drive, "stage", msgs_path, f"sae={sae_dir}", f"out={out}", f"tokenizer={vocab_path}",
                            f"top_n={TOP_N}", f"threshold={FRAC}", "reservoir=4", *extra],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout, r.stderr)
            sys.exit(f"fm_drive failed with {r.returncode}")
        with open(os.path.join(out, "summary.json")) as f:
            return json.load(f)

    out1 = os.path.join(tmp, "run1")
    summ = run(out1)
    n_tok = len(seqs) * (T - 1)
    check(summ["tokens"] == n_tok, f"tokens {summ['tokens']} != {n_tok} (BOS dropped)")
    check(summ["checkpoint"] == "step100" and summ["hook"] == "resid_post.3", "metadata")
    alive_ref = {i for i in range(N) if ref_max[i] > 0}
    alive = {f["id"] for f in summ["features"]}
    check(alive == alive_ref, f"alive {sorted(alive)} != reference {sorted(alive_ref)}")
    for i in sorted(alive & alive_ref):
        with open(os.path.join(out1, "features", f"{i}.json")) as f:
            fj = json.load(f)
        check(math.isclose(fj["max_act"], ref_max[i], rel_tol=1e-4), f"f{i} max {fj['max_act']} != {ref_max[i]}")
        check(fj["fired_tokens"] == int((dense[:, :, i] > 0).sum()), f"f{i} fired tokens")
        check(math.isclose(fj["density"], (dense[:, :, i] > 0).sum() / n_tok, rel_tol=1e-9), f"f{i} density")
        # top-N by peak, ties by stream order
        order = sorted(range(len(seqs)), key=lambda s: (-peak[s, i], s))
        want = [s for s in order if peak[s, i] > 0][:TOP_N]
        got = [e["doc_id"] for e in fj["examples"]]
        check(got == want, f"f{i} top examples {got} != {want}")
        n_thr = sum(1 for s in want if peak[s, i] > FRAC * ref_max[i])
        check(len(fj["token_act"]) == n_thr, f"f{i} token_act has {len(fj['token_act'])} examples, want {n_thr}")
        qmax = max(peak[s, i] for s in want[:n_thr]) if n_thr else 0
        for e, s in enumerate(want[:n_thr]):
            toks = [VOCAB[t].replace("▁", " ") for t in seqs[s][1][1:]]
            qs = [0 if a <= 0 else math.ceil(a * 10 / qmax) for a in dense[s, :, i]]
            pairs = fj["token_act"][e]
            check([p[0] for p in pairs] == toks, f"f{i} example {e} tokens {[p[0] for p in pairs]} != {toks}")
            check(all(abs(p[1] - w) <= (0 if w == 0 else 1) for p, w in zip(pairs, qs)),
                  f"f{i} example {e} quantised {[p[1] for p in pairs]} != {qs}")
            check(fj["examples"][e]["label"] == seqs[s][0], f"f{i} label")

    def feat(i):
        with open(os.path.join(out1, "features", f"{i}.json")) as f:
            return json.load(f)

    expect = {0: ("en", "en", "token", " dog"), 1: ("ja", "ja", "token", "犬"), 2: ("bilingual", "bilingual", "concept", None),
              3: ("en", "en", None, "1"), 4: ("ja", "ja", None, "2"), 5: ("ja", "ja", "token", "、")}
    for i, (paper, label, gran, top_tok) in expect.items():
        fj = feat(i)
        check(fj["language"]["paper"] == paper, f"f{i} paper language {fj['language']['paper']} != {paper}")
        check(fj["language"]["label"] == label, f"f{i} label language {fj['language']['label']} != {label}")
        if gran:
            check(fj["granularity"]["class"] == gran, f"f{i} granularity {fj['granularity']['class']} != {gran}")
        if top_tok:
            peak_toks = {e["tokens"][e["peak_pos"]] for e in fj["examples"] if e["above_threshold"]}
            check(peak_toks == {TOK[top_tok.replace(' ', '▁')]}, f"f{i} peaks on {peak_toks}, planted {top_tok!r}")
    check(feat(5)["language"]["script"] == "ja", "f5 script language: full-width comma defers to Japanese")
    check(feat(2)["granularity"]["spans_both_languages"], "f2 spans both languages")

    # Two passes: the paper's exact selection, the earliest TOP_N sequences above FRAC * max.
    out2 = os.path.join(tmp, "run2")
    run(out2, f"max_from={os.path.join(out1, 'summary.json')}")
    for i in sorted(alive_ref):
        with open(os.path.join(out2, "features", f"{i}.json")) as f:
            fj = json.load(f)
        want = [s for s in range(len(seqs)) if peak[s, i] > FRAC * ref_max[i]][:TOP_N]
        got = sorted(e["doc_id"] for e in fj["examples"])
        check(got == want, f"two-pass f{i}: {got} != paper's {want}")

    # The dashboard lists every alive feature and has a page for each.
    with open(os.path.join(out1, "index.html"), encoding="utf-8") as f:
        html = f.read()
    check(html.count("<tr><td data-v=") == len(alive_ref), "index.html rows")
    check(all(os.path.exists(os.path.join(out1, "features", f"{i}.html")) for i in alive_ref), "feature pages")

    for msg in failures:
        print("FAIL:", msg)
    print(f"{len(alive_ref)} features checked; {'FAIL' if failures else 'ok'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
