#!/usr/bin/python3
"""PyTorch peer of saeflow's forward benchmark (bench/forward_bench.sh).

  forward_bench_torch.py make DIR                     writes the ~100M-parameter Llama-shaped random
                                                      checkpoint (d 768, 12 layers, GQA 12/4, ffn 2048,
                                                      vocab 32000, tied, bf16) as a Hugging Face dir
  forward_bench_torch.py run DIR B T LAST|full ITERS  prints "tokens/s" of the same forward in torch

The forward is written the way Hugging Face's LlamaModel computes it (separate q/k/v projections,
rotate_half RoPE, repeat_kv for GQA, matmul attention with a causal mask, softmax, SwiGLU), float32,
torch.inference_mode(), stopping after block LAST or running the head and loss with "full".
Threads: torch.set_num_threads(2); run with OPENBLAS_CORETYPE set as for saeflow.
"""
import json
import math
import os
import struct
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from forward_make_fixtures import save_safetensors  # noqa: E402

CONFIG = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=768,
              num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
              intermediate_size=2048, vocab_size=32000, max_position_embeddings=2048,
              rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=True,
              bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16")


def make(d):
    c = CONFIG
    g = torch.Generator().manual_seed(0)
    D, H, KV, F, V = (c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"],
                      c["intermediate_size"], c["vocab_size"])
    hd = D // H
    r = lambda *s: (torch.randn(*s, generator=g) * 0.02).to(torch.bfloat16)
    W = {"model.embed_tokens.weight": r(V, D), "model.norm.weight": torch.ones(D, dtype=torch.bfloat16)}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = torch.ones(D, dtype=torch.bfloat16)
        W[p + "post_attention_layernorm.weight"] = torch.ones(D, dtype=torch.bfloat16)
        W[p + "self_attn.q_proj.weight"] = r(H * hd, D)
        W[p + "self_attn.k_proj.weight"] = r(KV * hd, D)
        W[p + "self_attn.v_proj.weight"] = r(KV * hd, D)
        W[p + "self_attn.o_proj.weight"] = r(D, H * hd)
        W[p + "mlp.gate_proj.weight"] = r(F, D)
        W[p + "mlp.up_proj.weight"] = r(F, D)
        W[p + "mlp.down_proj.weight"] = r(D, F)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    save_safetensors(os.path.join(d, "model.safetensors"), W, {"format": "pt"})
    print(f"{sum(v.numel() for v in W.values()) / 1e6:.1f}M parameters in {d}")


def load(d):
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    W = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        t = torch.frombuffer(bytearray(raw[8 + n + b:8 + n + e]), dtype=torch.int16)
        W[k] = t.view(torch.bfloat16).float().reshape(v["shape"])
    return W


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(c, W, tokens, last, full):
    D, H, KV = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd, eps = D // H, c["rms_norm_eps"]
    B, T = tokens.shape
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    freqs = torch.outer(torch.arange(T).float(), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)
    x = W["model.embed_tokens.weight"][tokens]
    F = torch.nn.functional
    for l in range(last + 1):
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = F.linear(h, W[p + "self_attn.q_proj.weight"]).view(B, T, H, hd).transpose(1, 2)
        k = F.linear(h, W[p + "self_attn.k_proj.weight"]).view(B, T, KV, hd).transpose(1, 2)
        v = F.linear(h, W[p + "self_attn.v_proj.weight"]).view(B, T, KV, hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        s = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd) + mask, dim=-1)
        a = (s @ v).transpose(1, 2).reshape(B, T, D)
        x = x + F.linear(a, W[p + "self_attn.o_proj.weight"])
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        m = F.silu(F.linear(h, W[p + "mlp.gate_proj.weight"])) * F.linear(h, W[p + "mlp.up_proj.weight"])
        x = x + F.linear(m, W[p + "mlp.down_proj.weight"])
    if full:
        logits = F.linear(rms_norm(x, W["model.norm.weight"], eps), W["model.embed_tokens.weight"])
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                               reduction="none")
    return x


def run(d, B, T, last, iters):
    torch.set_num_threads(2)
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    W = load(d)
    full = last == "full"
    last = c["num_hidden_layers"] - 1 if full else int(last)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, c["vocab_size"], (B, T), generator=g)
    best = float("inf")
    with torch.inference_mode():
        for it in range(iters + 1):  # the first run warms up
            t0 = time.perf_counter()
            forward(c, W, tokens, last, full)
            dt = time.perf_counter() - t0
            if it:
                best = min(best, dt)
    print(f"{B * T / best:.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 7 and sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
    else:
        sys.exit(__doc__.split("\n\n")[1])
