"""Planted features: a fixture for the feature_miner tests.

An SAE in the paper's llm-jp-sae layout is built with known decoder directions; each token's
activation is the sum of the directions of the latents planted on it, plus noise. Known tokens
therefore fire known latents:
  latent 0  "▁dog"                          English, token-level
  latent 1  "犬"                            Japanese, token-level
  latent 2  "▁dog" "▁cat" "犬" "猫"         mixed, concept-level
  latent 3  "1" (only in English text)      English through the digit rule
  latent 4  "2" (only in Japanese text)     Japanese through the digit rule
  latent 5  "、"                             Japanese (paper: non-ASCII; script: defers to kanji)
BOS carries a large latent-0 activation that must be dropped, as the paper drops position 0.

The reference: PyTorch encodes the same activations the way llm-jp-sae's TopKSAE does
(x / ||x||, relu(encoder(x - b_dec)), topk): dense [S, T-1, N], per-sequence peaks, maxima, and
the encoder's pre-activation before ReLU and top-k, pre [S, T-1, N].
"""
import json
import os
import struct
import sys

import msgpack
import msgpack_numpy
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
import safetensors_np  # noqa: E402

D, N, K = 16, 24, 4

VOCAB = ["<unk>", "<s>", "</s>", "▁the", "▁dog", "▁cat", "▁is", "▁big", "犬", "猫", "は", "大きい",
         "1", "2", "、", "。", "▁a", "です", "▁small", "小さい"]
TOK = {p: i for i, p in enumerate(VOCAB)}
PLANT = {"▁dog": [(0, 3.0), (2, 1.5)], "犬": [(1, 3.0), (2, 1.6)], "▁cat": [(2, 1.4)], "猫": [(2, 1.3)],
         "1": [(3, 2.0)], "2": [(4, 2.0)], "、": [(5, 2.5)], "<s>": [(0, 9.0)]}


def make(tmp):
    """Writes the SAE, vocabulary and message file into tmp; returns them with the reference."""
    rng = np.random.default_rng(1)
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
    safetensors_np.write(os.path.join(sae_dir, "model.safetensors"),
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
    pre = (x - torch.from_numpy(b_dec)) @ torch.from_numpy(W_enc).T + torch.from_numpy(b_enc)
    top = torch.relu(pre).topk(K, dim=-1)
    dense = torch.zeros_like(pre).scatter_(-1, top.indices, top.values).reshape(len(seqs), T - 1, N).numpy()
    peak = dense.max(axis=1)  # [S, N]
    ref_max = peak.max(axis=0)
    return {"sae_dir": sae_dir, "vocab_path": vocab_path, "msgs_path": msgs_path, "seqs": seqs, "T": T,
            "dense": dense, "peak": peak, "ref_max": ref_max, "pre": pre.reshape(len(seqs), T - 1, N).numpy(),
            "batch": B}
