#!/usr/bin/python3
"""Makes the forward stage's test fixtures: tiny random-weight Hugging Face checkpoint directories
(config.json + safetensors) for each supported architecture, and reference activations at every
hook point computed here, independently of saeflow, following Hugging Face transformers' semantics:

  Llama / Qwen2 / Mistral: RMSNorm (float32), rotate_half RoPE (linear, dynamic, llama3 scaling),
                           GQA, SwiGLU MLP, optional q/k/v(/o) biases, tied or untied head.
  GPT-2:                   Conv1D weights stored [in, out], learned positions, gelu_new, LayerNorm.
  GPT-NeoX (Pythia):       fused query_key_value laid out per head as [q, k, v], partial rotary
                           (rotary_pct), parallel residual, exact gelu, untied embed_out.

Hook names as TransformerLens counts them: resid_pre.L, attn_out.L, mlp_hidden.L (after the
activation; act(gate) * up for gated MLPs), mlp_out.L, resid_post.L. resid_post of the last block is
BEFORE the final norm (TransformerLens; Hugging Face's last hidden_states entry is after it).

The reference is computed in float64 from the weights as stored (after bf16/f16 rounding), so it is
the exact answer a float32 implementation should approach. Safetensors files are written here by
hand (8-byte header length, JSON header, raw little-endian data) so no extra package is needed.

Usage: /usr/bin/python3 tools/forward_make_fixtures.py OUT_DIR   (default stages/forward/tests/fixtures)
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402

DT = torch.float64
ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32"}


def save_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> torch tensor (already in the storage dtype)."""
    safetensors_np.write(path, {k: safetensors_np.from_torch(t) for k, t in tensors.items()}, metadata)


# ------------------------------------------------------------------------------------------------
# Reference math (float64)

def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def layer_norm(x, w, b, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


def act_fn(name, x):
    if name in ("silu", "swish"):
        return x * torch.sigmoid(x)
    if name == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    if name == "relu":
        return torch.relu(x)
    raise ValueError(name)


def rope_inv_freq(rot_dim, theta, scaling, seq_len, max_pos):
    """Hugging Face's rope init functions (default, linear, dynamic, llama3)."""
    inv = 1.0 / (theta ** (torch.arange(0, rot_dim, 2, dtype=DT) / rot_dim))
    if not scaling:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    factor = scaling["factor"]
    if kind == "linear":
        return inv / factor
    if kind == "dynamic":
        if seq_len <= max_pos:
            return inv
        base = theta * ((factor * seq_len / max_pos) - (factor - 1)) ** (rot_dim / (rot_dim - 2))
        return 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=DT) / rot_dim))
    if kind == "llama3":
        lo, hi = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        lo_wl, hi_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        out = torch.where(wl > lo_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wl < hi_wl) & ~(wl > lo_wl)
        return torch.where(medium, smoothed, out)
    raise ValueError(kind)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rope(x, inv_freq):
    """x: [B, H, T, hd]; rotates the first 2*len(inv_freq) dims (partial rotary), keeps the rest."""
    rot = 2 * inv_freq.shape[0]
    T = x.shape[2]
    freqs = torch.outer(torch.arange(T, dtype=DT), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    xr, xp = x[..., :rot], x[..., rot:]
    return torch.cat((xr * cos + rotate_half(xr) * sin, xp), dim=-1)


def attention(q, k, v, scale):
    """q: [B, H, T, hd]; k, v: [B, KV, T, hd] (GQA: each kv head serves H/KV query heads)."""
    rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    s = (q @ k.transpose(-1, -2)) * scale
    T = q.shape[2]
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def split_heads(x, n, hd):
    B, T, _ = x.shape
    return x.view(B, T, n, hd).transpose(1, 2)


def merge_heads(x):
    B, H, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hd)


def lm_tail(x, lnf, head_w, tokens):
    logits = lnf(x) @ head_w.T
    B, T, V = logits.shape
    loss = torch.full((B, T), float("nan"), dtype=DT)
    lp = torch.log_softmax(logits, dim=-1)
    loss[:, :-1] = -lp[:, :-1].gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logits, loss


def forward_llama(cfg, W, tokens):
    L, d, H = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or d // H
    eps = cfg["rms_norm_eps"]
    T = tokens.shape[1]
    inv = rope_inv_freq(hd, cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling"), T,
                        cfg["max_position_embeddings"])
    hooks = {}
    x = W["model.embed_tokens.weight"][tokens]
    for l in range(L):
        p = f"model.layers.{l}."
        hooks[f"resid_pre.{l}"] = x
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)

        def lin(name, inp):
            y = inp @ W[p + name + ".weight"].T
            return y + W[p + name + ".bias"] if p + name + ".bias" in W else y
        q = apply_rope(split_heads(lin("self_attn.q_proj", h), H, hd), inv)
        k = apply_rope(split_heads(lin("self_attn.k_proj", h), KV, hd), inv)
        v = split_heads(lin("self_attn.v_proj", h), KV, hd)
        a = lin("self_attn.o_proj", merge_heads(attention(q, k, v, 1.0 / math.sqrt(hd))))
        hooks[f"attn_out.{l}"] = a
        x = x + a
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        m = act_fn(cfg["hidden_act"], lin("mlp.gate_proj", h)) * lin("mlp.up_proj", h)
        hooks[f"mlp_hidden.{l}"] = m
        o = lin("mlp.down_proj", m)
        hooks[f"mlp_out.{l}"] = o
        x = x + o
        hooks[f"resid_post.{l}"] = x
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    logits, loss = lm_tail(x, lambda y: rms_norm(y, W["model.norm.weight"], eps), head, tokens)
    return hooks, logits, loss


def forward_gpt2(cfg, W, tokens):
    L, d, H = cfg["n_layer"], cfg["n_embd"], cfg["n_head"]
    hd, eps = d // H, cfg["layer_norm_epsilon"]
    T = tokens.shape[1]
    hooks = {}
    x = W["transformer.wte.weight"][tokens] + W["transformer.wpe.weight"][:T]
    for l in range(L):
        p = f"transformer.h.{l}."

        def conv1d(name, inp):  # Conv1D: weight [in, out], y = x @ W + b
            return inp @ W[p + name + ".weight"] + W[p + name + ".bias"]
        hooks[f"resid_pre.{l}"] = x
        h = layer_norm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        q, k, v = conv1d("attn.c_attn", h).split(d, dim=-1)
        a = attention(split_heads(q, H, hd), split_heads(k, H, hd), split_heads(v, H, hd),
                      1.0 / math.sqrt(hd))
        a = conv1d("attn.c_proj", merge_heads(a))
        hooks[f"attn_out.{l}"] = a
        x = x + a
        h = layer_norm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        m = act_fn(cfg["activation_function"], conv1d("mlp.c_fc", h))
        hooks[f"mlp_hidden.{l}"] = m
        o = conv1d("mlp.c_proj", m)
        hooks[f"mlp_out.{l}"] = o
        x = x + o
        hooks[f"resid_post.{l}"] = x
    logits, loss = lm_tail(
        x, lambda y: layer_norm(y, W["transformer.ln_f.weight"], W["transformer.ln_f.bias"], eps),
        W["transformer.wte.weight"], tokens)
    return hooks, logits, loss


def forward_neox(cfg, W, tokens):
    L, d, H = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]
    hd, eps = d // H, cfg["layer_norm_eps"]
    rot = int(hd * cfg["rotary_pct"])
    T = tokens.shape[1]
    inv = rope_inv_freq(rot, cfg["rotary_emb_base"], None, T, cfg["max_position_embeddings"])
    hooks = {}
    x = W["gpt_neox.embed_in.weight"][tokens]
    for l in range(L):
        p = f"gpt_neox.layers.{l}."

        def lin(name, inp):
            return inp @ W[p + name + ".weight"].T + W[p + name + ".bias"]
        hooks[f"resid_pre.{l}"] = x
        h = layer_norm(x, W[p + "input_layernorm.weight"], W[p + "input_layernorm.bias"], eps)
        B = x.shape[0]
        qkv = lin("attention.query_key_value", h).view(B, T, H, 3 * hd).transpose(1, 2)
        q, k, v = qkv[..., :hd], qkv[..., hd:2 * hd], qkv[..., 2 * hd:]
        q, k = apply_rope(q, inv), apply_rope(k, inv)
        a = lin("attention.dense", merge_heads(attention(q, k, v, 1.0 / math.sqrt(hd))))
        hooks[f"attn_out.{l}"] = a
        mlp_in = x if cfg["use_parallel_residual"] else x + a
        h = layer_norm(mlp_in, W[p + "post_attention_layernorm.weight"],
                       W[p + "post_attention_layernorm.bias"], eps)
        m = act_fn(cfg["hidden_act"], lin("mlp.dense_h_to_4h", h))
        hooks[f"mlp_hidden.{l}"] = m
        o = lin("mlp.dense_4h_to_h", m)
        hooks[f"mlp_out.{l}"] = o
        x = x + a + o
        hooks[f"resid_post.{l}"] = x
    logits, loss = lm_tail(
        x, lambda y: layer_norm(y, W["gpt_neox.final_layer_norm.weight"],
                                W["gpt_neox.final_layer_norm.bias"], eps),
        W["embed_out.weight"], tokens)
    return hooks, logits, loss


# ------------------------------------------------------------------------------------------------
# Random checkpoints

def llama_weights(cfg, g, attn_bias=False, o_bias=False):
    d, H, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    KV, ff, V = cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or d // H
    r = lambda *s: torch.randn(*s, generator=g, dtype=DT) * 0.2
    W = {"model.embed_tokens.weight": r(V, d), "model.norm.weight": 1 + r(d)}
    for l in range(L):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1 + r(d)
        W[p + "post_attention_layernorm.weight"] = 1 + r(d)
        W[p + "self_attn.q_proj.weight"] = r(H * hd, d)
        W[p + "self_attn.k_proj.weight"] = r(KV * hd, d)
        W[p + "self_attn.v_proj.weight"] = r(KV * hd, d)
        W[p + "self_attn.o_proj.weight"] = r(d, H * hd)
        if attn_bias:
            W[p + "self_attn.q_proj.bias"] = r(H * hd)
            W[p + "self_attn.k_proj.bias"] = r(KV * hd)
            W[p + "self_attn.v_proj.bias"] = r(KV * hd)
        if o_bias:
            W[p + "self_attn.o_proj.bias"] = r(d)
        W[p + "mlp.gate_proj.weight"] = r(ff, d)
        W[p + "mlp.up_proj.weight"] = r(ff, d)
        W[p + "mlp.down_proj.weight"] = r(d, ff)
    if not cfg["tie_word_embeddings"]:
        W["lm_head.weight"] = r(V, d)
    return W


def gpt2_weights(cfg, g):
    d, L, V, P = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"], cfg["n_positions"]
    ff = cfg["n_inner"] or 4 * d
    r = lambda *s: torch.randn(*s, generator=g, dtype=DT) * 0.2
    W = {"transformer.wte.weight": r(V, d), "transformer.wpe.weight": r(P, d),
         "transformer.ln_f.weight": 1 + r(d), "transformer.ln_f.bias": r(d)}
    for l in range(L):
        p = f"transformer.h.{l}."
        for ln in ("ln_1", "ln_2"):
            W[p + ln + ".weight"] = 1 + r(d)
            W[p + ln + ".bias"] = r(d)
        for name, i, o in (("attn.c_attn", d, 3 * d), ("attn.c_proj", d, d),
                           ("mlp.c_fc", d, ff), ("mlp.c_proj", ff, d)):
            W[p + name + ".weight"] = r(i, o)
            W[p + name + ".bias"] = r(o)
    return W


def neox_weights(cfg, g):
    d, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    ff = cfg["intermediate_size"]
    r = lambda *s: torch.randn(*s, generator=g, dtype=DT) * 0.2
    W = {"gpt_neox.embed_in.weight": r(V, d), "embed_out.weight": r(V, d),
         "gpt_neox.final_layer_norm.weight": 1 + r(d), "gpt_neox.final_layer_norm.bias": r(d)}
    for l in range(L):
        p = f"gpt_neox.layers.{l}."
        for ln in ("input_layernorm", "post_attention_layernorm"):
            W[p + ln + ".weight"] = 1 + r(d)
            W[p + ln + ".bias"] = r(d)
        for name, i, o in (("attention.query_key_value", d, 3 * d), ("attention.dense", d, d),
                           ("mlp.dense_h_to_4h", d, ff), ("mlp.dense_4h_to_h", ff, d)):
            W[p + name + ".weight"] = r(o, i)
            W[p + name + ".bias"] = r(o)
    return W


LLAMA_BASE = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3,
                  intermediate_size=48, vocab_size=96, max_position_embeddings=64, rms_norm_eps=1e-5,
                  hidden_act="silu", bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16")

FIXTURES = [
    # name, config, weights builder, storage dtype, shards
    ("llama_gqa_bf16",
     dict(LLAMA_BASE, architectures=["LlamaForCausalLM"], model_type="llama", rope_theta=100.0,
          tie_word_embeddings=True,
          rope_scaling=dict(rope_type="llama3", factor=4.0, low_freq_factor=0.5,
                            high_freq_factor=2.0, original_max_position_embeddings=16)),
     lambda c, g: llama_weights(c, g), torch.bfloat16, 1),
    ("qwen2_bias",
     dict(LLAMA_BASE, architectures=["Qwen2ForCausalLM"], model_type="qwen2", rope_theta=1e6,
          tie_word_embeddings=False, use_sliding_window=False, torch_dtype="bfloat16"),
     lambda c, g: llama_weights(c, g, attn_bias=True), torch.bfloat16, 1),
    ("llama_sharded",
     dict(LLAMA_BASE, architectures=["LlamaForCausalLM"], model_type="llama", rope_theta=10000.0,
          tie_word_embeddings=False, attention_bias=True, num_key_value_heads=4,
          rope_scaling=dict(type="linear", factor=2.0), torch_dtype="float32"),
     lambda c, g: llama_weights(c, g, attn_bias=True, o_bias=True), torch.float32, 2),
    ("mistral_f16",
     dict(LLAMA_BASE, architectures=["MistralForCausalLM"], model_type="mistral", rope_theta=10000.0,
          tie_word_embeddings=False, head_dim=16, num_key_value_heads=1, max_position_embeddings=8,
          sliding_window=None, rope_scaling=dict(type="dynamic", factor=2.0), torch_dtype="float16"),
     lambda c, g: llama_weights(c, g), torch.float16, 1),
    ("gpt2",
     dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", n_embd=32, n_head=4, n_layer=3,
          n_inner=64, n_positions=32, vocab_size=96, layer_norm_epsilon=1e-5,
          activation_function="gelu_new", bos_token_id=1, eos_token_id=1, tie_word_embeddings=True,
          scale_attn_weights=True, torch_dtype="float32"),
     gpt2_weights, torch.float32, 1),
    ("neox",
     dict(architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", hidden_size=32,
          num_attention_heads=2, num_hidden_layers=3, intermediate_size=64, vocab_size=96,
          max_position_embeddings=64, rotary_pct=0.25, rotary_emb_base=10000,
          use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5,
          tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, torch_dtype="float16"),
     neox_weights, torch.float16, 1),
]

FORWARDS = {"LlamaForCausalLM": forward_llama, "Qwen2ForCausalLM": forward_llama,
            "MistralForCausalLM": forward_llama, "GPT2LMHeadModel": forward_gpt2,
            "GPTNeoXForCausalLM": forward_neox}


def make(out_dir, name, cfg, build, dtype, shards, seed):
    g = torch.Generator().manual_seed(seed)
    W = build(cfg, g)
    stored = {k: v.to(dtype) for k, v in W.items()}
    W64 = {k: v.to(DT) for k, v in stored.items()}  # the reference sees exactly what is stored
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    names = list(stored)
    if shards == 1:
        save_safetensors(os.path.join(d, "model.safetensors"), stored, {"format": "pt"})
    else:
        weight_map = {}
        per = (len(names) + shards - 1) // shards
        for s in range(shards):
            fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: stored[k] for k in names[s * per:(s + 1) * per]}
            save_safetensors(os.path.join(d, fn), part, {"format": "pt"})
            weight_map.update({k: fn for k in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)

    # Two sequences of 10 tokens; the first token is BOS as a tokenizer would add it.
    B, T = 2, 10
    bos = cfg.get("bos_token_id", 1)
    tokens = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
    tokens[:, 0] = bos
    hooks, logits, loss = FORWARDS[cfg["architectures"][0]](cfg, W64, tokens)
    ref = {"tokens": tokens.to(torch.int32)}
    ref.update({k: v.to(torch.float32) for k, v in hooks.items()})
    ref["logits"] = logits.to(torch.float32)
    ref["loss"] = loss.to(torch.float32)
    save_safetensors(os.path.join(d, "reference.safetensors"), ref)
    print(f"{name}: {sum(v.numel() for v in W.values())} params, {len(hooks)} hooks, "
          f"mean loss {loss[:, :-1].mean().item():.4f}")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "stages", "forward", "tests", "fixtures")
    for i, (name, cfg, build, dtype, shards) in enumerate(FIXTURES):
        make(out, name, cfg, build, dtype, shards, seed=1234 + i)


if __name__ == "__main__":
    main()
