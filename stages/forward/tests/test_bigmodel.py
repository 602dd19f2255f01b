#!/usr/bin/python3
"""Checkpoints as tools/make_random_checkpoint.py writes them (bf16, sharded safetensors +
model.safetensors.index.json, as Hugging Face saves large models) through `saeflow forward`, with
resident and with streamed weights (--weights, model.h's fw_weights).

Default (suite forward): the "tiny" shape cut into 1-2 tensor shards; resid_post.1 of both weight
modes against an independent float64 numpy Llama forward (RMSNorm, RoPE, GQA, SwiGLU) written here,
within 1e-4 of the reference's largest value; the index must list every tensor in a shard that
holds it.

--paper MODEL [LAST] (suite slow: meson test --setup=full): the paper-sized shape (default 1.8b,
resid_post.11 = hidden_states.12), written to a temporary directory under $TMPDIR (3.7 GB for 1.8b;
removed after); 2 sequences of 256 tokens. Streamed (chosen by --weights auto) must give the resident
run's activations, and its peak RSS (/usr/bin/time -v) must stay within 1.1x of the bf16 bytes on
disk of blocks 0..LAST, the weights the hook needs.

Usage: test_bigmodel.py SAEFLOW [--paper MODEL [LAST]]
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import safetensors_np  # noqa: E402

TOOL = os.path.join(ROOT, "tools", "make_random_checkpoint.py")


def make(kind, out, *extra):
    subprocess.run([sys.executable, TOOL, kind, out, *extra], check=True, stdout=subprocess.DEVNULL)


def run_forward(saeflow, model, hook, ids_text, out, weights, timed=False):
    cmd = [saeflow, "forward", model, "--hook", hook, "--out", out, "--weights", weights, "--threads", "2"]
    log = out + ".time"
    if timed:
        cmd = ["/usr/bin/time", "-v", "-o", log] + cmd
    p = subprocess.run(cmd, input=ids_text, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"saeflow forward --weights {weights} failed: {p.stderr}")
    rss = None
    if timed:
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(log).read()).group(1)) * 1024
    return np.load(out), rss


def load_weights(d):
    idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"]
    w = {}
    for shard in sorted(set(idx.values())):
        for name, a in safetensors_np.read_f32(os.path.join(d, shard)).items():
            if idx.get(name) != shard:
                sys.exit(f"{shard} holds {name}, which the index puts in {idx.get(name)}")
            w[name] = a.astype(np.float64)
    missing = set(idx) - set(w)
    if missing:
        sys.exit(f"the index lists tensors no shard holds: {sorted(missing)[:3]}")
    return w


def reference(cfg, w, ids, last):
    """resid_post.last of one sequence, Hugging Face's Llama in float64."""
    d, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, T = d // H, cfg["rms_norm_eps"], len(ids)
    inv = 1.0 / cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x):  # [heads, T, hd]
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * cos + np.concatenate([-x2, x1], -1) * sin

    x = w["model.embed_tokens.weight"][ids]
    for l in range(last + 1):
        p = f"model.layers.{l}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, H, hd).transpose(1, 0, 2))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2)
        k, v = np.repeat(k, H // KV, 0), np.repeat(v, H // KV, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = x + a.transpose(1, 0, 2).reshape(T, d) @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        g, u = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    return x


def check(what, ok, detail):
    print(f"{what:48s} {detail} {'ok' if ok else 'FAIL'}")
    return ok


def tiny(saeflow, tmp):
    model = os.path.join(tmp, "tiny")
    make("tiny", model, "--shard-bytes", "40000")
    cfg = json.load(open(os.path.join(model, "config.json")))
    shards = [f for f in os.listdir(model) if f.endswith(".safetensors")]
    good = check("sharded as Hugging Face names shards", len(shards) > 2 and all(
        re.fullmatch(r"model-\d{5}-of-%05d\.safetensors" % len(shards), f) for f in shards), f"{len(shards)} shards")
    w = load_weights(model)
    rng = np.random.default_rng(3)
    seqs = [[1] + list(rng.integers(3, cfg["vocab_size"], 11)), [1] + list(rng.integers(3, cfg["vocab_size"], 7))]
    text = "".join(" ".join(map(str, s)) + "\n" for s in seqs)
    want = np.concatenate([reference(cfg, w, np.array(s), 1) for s in seqs])
    got = {}
    for mode in ("resident", "stream"):
        got[mode], _ = run_forward(saeflow, model, "resid_post.1", text, os.path.join(tmp, mode + ".npy"), mode)
        err = np.abs(got[mode] - want).max() / np.abs(want).max() if got[mode].shape == want.shape else np.inf
        good &= check(f"resid_post.1, {mode} weights, vs numpy float64", err <= 1e-4, f"rel err {err:.2e}")
    return good


def paper(saeflow, tmp, kind, last):
    model = os.path.join(tmp, kind)
    make(kind, model)
    need = 0
    for f in os.listdir(model):
        if f.endswith(".safetensors"):
            for name, (dt, a) in safetensors_np.read(os.path.join(model, f))[0].items():
                if name.startswith("model.layers.") and int(name.split(".")[2]) <= last:
                    need += a.nbytes
    rng = np.random.default_rng(4)
    text = "".join(" ".join(map(str, [1] + list(rng.integers(3, 99584, 255)))) + "\n" for _ in range(2))
    hook = f"resid_post.{last}"
    got, rss = run_forward(saeflow, model, hook, text, os.path.join(tmp, "stream.npy"), "auto", timed=True)
    good = check(f"{kind} {hook}: streamed peak RSS / bf16 blocks", rss <= 1.1 * need,
                 f"{rss / 2**30:.2f} / {need / 2**30:.2f} GiB = {rss / need:.2f}x")
    if 4 * need < 0.6 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"):
        want, _ = run_forward(saeflow, model, hook, text, os.path.join(tmp, "resident.npy"), "resident")
        good &= check(f"{kind} {hook}: streamed == resident", np.array_equal(got, want), f"{got.shape}")
    return good


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    saeflow = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="saeflow_bigmodel_")
    try:
        if len(sys.argv) > 2 and sys.argv[2] == "--paper":
            kind = sys.argv[3] if len(sys.argv) > 3 else "1.8b"
            last = int(sys.argv[4]) if len(sys.argv) > 4 else 11
            ok = paper(saeflow, tmp, kind, last)
        else:
            ok = tiny(saeflow, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
