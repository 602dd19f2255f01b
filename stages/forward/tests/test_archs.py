#!/usr/bin/python3
"""Parity of the forward on the architectures beyond Llama/GPT-2/NeoX: Mistral with a sliding
window, OLMo-2, Qwen3, Gemma-2 and Gemma-3, against an independent float64 PyTorch implementation of
Hugging Face transformers' modelling code written here (no transformers package: Debian has none).

For each case this writes a small random checkpoint the way Hugging Face lays it out (config.json
with the keys its config class writes, model.safetensors in bf16 or f32) plus reference.safetensors
(tokens, every hook point of every block, logits, per-token loss), in a temporary directory, and
runs the forward-fixtures checker (tests/test_fixtures.c) on them: every hook, logits and loss
within 1e-4, the spliced pass, one sequence at a time in attention chunks of 3 queries, partial
loads. Sequences (12 tokens) are longer than every sliding window (4 or 5), so windowed blocks see
fewer keys than full ones. Then config fields that would change the math and are not implemented
are refused by `saeflow forward` with an error naming the field.

Hook points as TransformerLens defines them: attn_out and mlp_out are what is added to the
residual stream, so after the post-norms of OLMo-2 and Gemma; resid_pre.0 is the embedding after
Gemma's sqrt(d) scaling (Hugging Face's hidden_states[0]).

Usage: test_archs.py FIXTURES_CHECKER SAEFLOW
"""
import copy
import json
import math
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import safetensors_np  # noqa: E402

DT = torch.float64
B, T = 2, 12

# ------------------------------------------------------------------------------------------------
# Hugging Face semantics, float64


def layer_is_sliding(cfg, i):
    """The config classes' layer_types: "sliding_attention" or "full_attention" for block i."""
    if cfg.get("layer_types"):
        return cfg["layer_types"][i] == "sliding_attention"
    mt = cfg["model_type"]
    if mt == "mistral":
        return cfg.get("sliding_window") is not None
    if mt in ("qwen2", "qwen3"):
        return bool(cfg.get("use_sliding_window")) and i >= cfg.get("max_window_layers", 28)
    if mt == "gemma2":
        return bool((i + 1) % 2)
    if mt == "gemma3_text":
        return bool((i + 1) % cfg.get("sliding_window_pattern", 6))
    return False


def rope_params(cfg, sliding):
    """(theta, linear factor) of a block's RoPE, from the v4 keys (rope_theta, rope_scaling,
    Gemma-3's rope_local_base_freq) or the v5 rope_parameters (per layer type for Gemma-3)."""
    rp = cfg.get("rope_parameters")
    if rp:
        if "full_attention" in rp:
            rp = rp["sliding_attention" if sliding else "full_attention"]
        return rp["rope_theta"], rp.get("factor", 1.0) if rp.get("rope_type") == "linear" else 1.0
    if cfg["model_type"] == "gemma3_text" and sliding:
        return cfg.get("rope_local_base_freq", 10000.0), 1.0  # local RoPE: default type
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type"))
    assert kind in (None, "default", "linear")
    return cfg.get("rope_theta", 10000.0), rs["factor"] if kind == "linear" else 1.0


def rope(x, theta, factor):
    """x [B, heads, T, hd]: rotate_half RoPE over the whole head."""
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=DT) / hd)) / factor
    freqs = torch.outer(torch.arange(x.shape[2], dtype=DT), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    rot = torch.cat((-x[..., hd // 2:], x[..., :hd // 2]), dim=-1)
    return x * emb.cos() + rot * emb.sin()


def attention(q, k, v, scale, window, softcap):
    """Eager attention: scores * scale, optional tanh soft-capping, then the causal (and sliding
    window: kv > q - window) mask, softmax, values. q [B, H, T, hd], k/v [B, KV, T, hd]."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = (q @ k.transpose(-1, -2)) * scale
    if softcap:
        s = torch.tanh(s / softcap) * softcap
    n = q.shape[2]
    qi, ki = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = ki <= qi
    if window:
        allowed &= ki > qi - window
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def tied(cfg):
    """tie_word_embeddings, with the config class's default (Gemma's True, the others' False)."""
    return cfg.get("tie_word_embeddings", cfg["model_type"] in ("gemma2", "gemma3_text"))


def forward_ref(cfg, W, tokens):
    mt = cfg["model_type"]
    gemma, olmo = mt in ("gemma2", "gemma3_text"), mt == "olmo2"
    head_norm = mt in ("qwen3", "gemma3_text")  # RMSNorm over each head of q and k
    L, d, H = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]
    KV, hd, eps = cfg["num_key_value_heads"], cfg.get("head_dim") or d // H, cfg["rms_norm_eps"]
    scale = cfg["query_pre_attn_scalar"] ** -0.5 if gemma else hd ** -0.5
    attn_cap = cfg.get("attn_logit_softcapping") if gemma else None
    final_cap = cfg.get("final_logit_softcapping") if gemma else None

    def norm(x, w):  # Gemma's RMSNorm scales by (1 + w), the others' by w
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return y * (1 + w) if gemma else y * w

    def act(x):
        if gemma:  # gelu_pytorch_tanh
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        return x * torch.sigmoid(x)

    hooks = {}
    x = W["model.embed_tokens.weight"][tokens]
    if gemma:
        x = x * math.sqrt(d)
    for l in range(L):
        p = f"model.layers.{l}."

        def lin(name, inp):
            y = inp @ W[p + name + ".weight"].T
            return y + W[p + name + ".bias"] if p + name + ".bias" in W else y

        def heads(y, n):
            return y.view(B, T, n, hd).transpose(1, 2)
        sliding = layer_is_sliding(cfg, l)
        hooks[f"resid_pre.{l}"] = x
        h = x if olmo else norm(x, W[p + "input_layernorm.weight"])
        q, k, v = lin("self_attn.q_proj", h), lin("self_attn.k_proj", h), lin("self_attn.v_proj", h)
        if olmo:  # QK-norm over the whole projection
            q, k = norm(q, W[p + "self_attn.q_norm.weight"]), norm(k, W[p + "self_attn.k_norm.weight"])
        q, k, v = heads(q, H), heads(k, KV), heads(v, KV)
        if head_norm:
            q, k = norm(q, W[p + "self_attn.q_norm.weight"]), norm(k, W[p + "self_attn.k_norm.weight"])
        theta, factor = rope_params(cfg, sliding)
        q, k = rope(q, theta, factor), rope(k, theta, factor)
        a = attention(q, k, v, scale, cfg["sliding_window"] if sliding else None, attn_cap)
        a = lin("self_attn.o_proj", a.transpose(1, 2).reshape(B, T, H * hd))
        if olmo or gemma:
            a = norm(a, W[p + "post_attention_layernorm.weight"])
        hooks[f"attn_out.{l}"] = a
        x = x + a
        pre_mlp = "pre_feedforward_layernorm" if gemma else "post_attention_layernorm"
        h = x if olmo else norm(x, W[p + pre_mlp + ".weight"])
        m = act(lin("mlp.gate_proj", h)) * lin("mlp.up_proj", h)
        hooks[f"mlp_hidden.{l}"] = m
        o = lin("mlp.down_proj", m)
        if olmo or gemma:
            o = norm(o, W[p + "post_feedforward_layernorm.weight"])
        hooks[f"mlp_out.{l}"] = o
        x = x + o
        hooks[f"resid_post.{l}"] = x
    head = W["model.embed_tokens.weight"] if tied(cfg) else W["lm_head.weight"]
    logits = norm(x, W["model.norm.weight"]) @ head.T
    if final_cap:
        logits = torch.tanh(logits / final_cap) * final_cap
    loss = torch.full((B, T), float("nan"), dtype=DT)
    lp = torch.log_softmax(logits, dim=-1)
    loss[:, :-1] = -lp[:, :-1].gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
    return hooks, logits, loss


# ------------------------------------------------------------------------------------------------
# Random checkpoints, Hugging Face layout


def weights(cfg, g):
    mt = cfg["model_type"]
    gemma, olmo = mt in ("gemma2", "gemma3_text"), mt == "olmo2"
    d, H, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    KV, ff, V = cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or d // H
    r = lambda *s: torch.randn(*s, generator=g, dtype=DT) * 0.2  # noqa: E731
    nw = (lambda n: r(n)) if gemma else (lambda n: 1 + r(n))  # stored norm weights: Gemma's are 0-centred
    W = {"model.embed_tokens.weight": r(V, d), "model.norm.weight": nw(d)}
    norms = {"olmo2": ["post_attention_layernorm", "post_feedforward_layernorm"],
             "gemma2": ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                        "post_feedforward_layernorm"]}
    norms["gemma3_text"] = norms["gemma2"]
    for l in range(L):
        p = f"model.layers.{l}."
        for n in norms.get(mt, ["input_layernorm", "post_attention_layernorm"]):
            W[p + n + ".weight"] = nw(d)
        if olmo:
            W[p + "self_attn.q_norm.weight"], W[p + "self_attn.k_norm.weight"] = nw(H * hd), nw(KV * hd)
        if mt in ("qwen3", "gemma3_text"):
            W[p + "self_attn.q_norm.weight"], W[p + "self_attn.k_norm.weight"] = nw(hd), nw(hd)
        for name, rows in (("q_proj", H * hd), ("k_proj", KV * hd), ("v_proj", KV * hd)):
            W[p + "self_attn." + name + ".weight"] = r(rows, d)
            if cfg.get("attention_bias"):
                W[p + "self_attn." + name + ".bias"] = r(rows)
        W[p + "self_attn.o_proj.weight"] = r(d, H * hd)
        if cfg.get("attention_bias"):
            W[p + "self_attn.o_proj.bias"] = r(d)
        W[p + "mlp.gate_proj.weight"] = r(ff, d)
        W[p + "mlp.up_proj.weight"] = r(ff, d)
        W[p + "mlp.down_proj.weight"] = r(d, ff)
    if not tied(cfg):
        W["lm_head.weight"] = r(V, d)
    return W


SMALL = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4,
             intermediate_size=48, vocab_size=96, attention_dropout=0.0, initializer_range=0.02,
             use_cache=True)

MISTRAL = dict(SMALL, architectures=["MistralForCausalLM"], model_type="mistral", bos_token_id=1,
               eos_token_id=2, hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-05,
               rope_theta=1000000.0, sliding_window=4, tie_word_embeddings=False,
               transformers_version="4.42.0.dev0")

OLMO2 = dict(SMALL, architectures=["Olmo2ForCausalLM"], model_type="olmo2", attention_bias=False,
             eos_token_id=100257, hidden_act="silu", max_position_embeddings=4096, pad_token_id=100277,
             rms_norm_eps=1e-06, rope_scaling=None, rope_theta=500000, tie_word_embeddings=False,
             transformers_version="4.47.0.dev0")
# as transformers 5 writes it: rope_parameters instead of rope_theta / rope_scaling, dtype
OLMO2_V5 = {k: v for k, v in OLMO2.items() if k not in ("rope_theta", "rope_scaling")}
OLMO2_V5.update(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, attention_bias=True,
                tie_word_embeddings=True, dtype="float32", transformers_version="5.0.0")

QWEN3 = dict(SMALL, architectures=["Qwen3ForCausalLM"], model_type="qwen3", attention_bias=False,
             bos_token_id=151643, eos_token_id=151645, head_dim=16, hidden_act="silu",
             max_position_embeddings=40960, max_window_layers=28, rms_norm_eps=1e-06, rope_scaling=None,
             rope_theta=1000000, sliding_window=None, tie_word_embeddings=True, use_sliding_window=False,
             transformers_version="4.51.0")

GEMMA2 = dict(SMALL, architectures=["Gemma2ForCausalLM"], model_type="gemma2", attention_bias=False,
              attn_logit_softcapping=2.0, bos_token_id=2, cache_implementation="hybrid", eos_token_id=1,
              final_logit_softcapping=3.0, head_dim=16, hidden_act="gelu_pytorch_tanh",
              hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192, pad_token_id=0,
              query_pre_attn_scalar=24, rms_norm_eps=1e-06, rope_theta=10000.0, sliding_window=4,
              transformers_version="4.42.4")

GEMMA3 = dict(SMALL, architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", attention_bias=False,
              attn_logit_softcapping=None, bos_token_id=2, cache_implementation="hybrid", eos_token_id=1,
              final_logit_softcapping=None, head_dim=16, hidden_activation="gelu_pytorch_tanh",
              max_position_embeddings=32768, pad_token_id=0, query_pre_attn_scalar=16, rms_norm_eps=1e-06,
              rope_local_base_freq=10000, rope_scaling={"factor": 8.0, "rope_type": "linear"},
              rope_theta=1000000, sliding_window=4, sliding_window_pattern=3, transformers_version="4.50.0.dev0")
# transformers 5: layer_types and per-type rope_parameters instead of the pattern and the rope keys
GEMMA3_V5 = {k: v for k, v in GEMMA3.items()
             if k not in ("rope_local_base_freq", "rope_scaling", "rope_theta", "sliding_window_pattern")}
GEMMA3_V5.update(layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                 rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0},
                                  "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}},
                 sliding_window=5, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                 tie_word_embeddings=False, dtype="float32", transformers_version="5.0.0")

# name, config, storage dtype
CASES = [
    ("mistral_window_bf16", dict(MISTRAL, torch_dtype="bfloat16"), torch.bfloat16),
    ("mistral_window_f32", dict(MISTRAL, torch_dtype="float32", sliding_window=5, head_dim=16,
                                num_key_value_heads=1), torch.float32),
    ("olmo2_bf16", dict(OLMO2, torch_dtype="bfloat16"), torch.bfloat16),
    ("olmo2_v5_f32", OLMO2_V5, torch.float32),
    # head_dim 16 while hidden_size / heads is 8
    ("qwen3_bf16", dict(QWEN3, torch_dtype="bfloat16"), torch.bfloat16),
    # windowed from block 2 on, q/k/v/o biases, untied
    ("qwen3_window_f32", dict(QWEN3, torch_dtype="float32", use_sliding_window=True, sliding_window=4,
                              max_window_layers=2, attention_bias=True, tie_word_embeddings=False,
                              head_dim=8), torch.float32),
    # soft-capping at 2 (scores) and 3 (logits), so that tanh bends; query_pre_attn_scalar 24 with head_dim 16
    ("gemma2_bf16", dict(GEMMA2, torch_dtype="bfloat16"), torch.bfloat16),
    ("gemma2_f32", dict(GEMMA2, torch_dtype="float32", head_dim=8, query_pre_attn_scalar=8, sliding_window=5,
                        attn_logit_softcapping=None, final_logit_softcapping=None, tie_word_embeddings=False,
                        attention_bias=True), torch.float32),
    # blocks 0, 1, 3 windowed with RoPE base 10^4, block 2 global with base 10^6 and linear scaling 8
    ("gemma3_bf16", dict(GEMMA3, torch_dtype="bfloat16"), torch.bfloat16),
    # alternating, local base 100, global 5e4 scaled by 2, soft-capped, untied
    ("gemma3_v5_f32", GEMMA3_V5, torch.float32),
]

# config.json fields that change the math and are not implemented: (case, field, value[, what the
# error names, by default the field]).
REFUSED = [
    ("gemma3_bf16", "use_bidirectional_attention", True),
    ("gemma3_v5_f32", "rope_parameters", {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                          "sliding_attention": {"rope_type": "linear", "factor": 2.0,
                                                                "rope_theta": 1e4}}),
    ("gemma3_bf16", "architectures", ["Gemma3ForConditionalGeneration"], "Gemma3ForConditionalGeneration"),
    ("mistral_window_f32", "rope_scaling", {"rope_type": "yarn", "factor": 4.0}),
    ("olmo2_v5_f32", "rope_parameters", {"rope_type": "longrope", "rope_theta": 10000.0, "factor": 4.0}),
    ("qwen3_window_f32", "layer_types", ["sliding_attention", "full_attention"]),
    ("gemma2_bf16", "query_pre_attn_scalar", 0),
    ("gemma2_bf16", "attn_logit_softcapping", -50.0),
    ("gemma2_f32", "hidden_activation", "gelu_fancy"),
    ("olmo2_bf16", "layer_types", ["full_attention", "chunked_attention", "full_attention", "full_attention"]),
]


def write_case(out, name, cfg, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    W = weights(cfg, g)
    stored = {k: v.to(dtype) for k, v in W.items()}
    W64 = {k: v.to(DT) for k, v in stored.items()}  # the reference sees exactly what is stored
    d = os.path.join(out, name)
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    safetensors_np.write(os.path.join(d, "model.safetensors"),
                         {k: safetensors_np.from_torch(v) for k, v in stored.items()}, {"format": "pt"})
    tokens = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
    bos = cfg.get("bos_token_id") or 0
    tokens[:, 0] = bos if bos < cfg["vocab_size"] else 0  # the real ids are beyond these small vocabularies
    hooks, logits, loss = forward_ref(cfg, W64, tokens)
    ref = {"tokens": tokens.to(torch.int32), "logits": logits.float(), "loss": loss.float()}
    ref.update({k: v.float() for k, v in hooks.items()})
    safetensors_np.write(os.path.join(d, "reference.safetensors"),
                         {k: safetensors_np.from_torch(v) for k, v in ref.items()})
    return d


def check_refused(saeflow, tmp, src, field, value, expect):
    d = os.path.join(tmp, f"refused_{os.path.basename(src)}_{field}_{len(os.listdir(tmp))}")
    os.makedirs(d)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg[field] = value
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    os.symlink(os.path.join(src, "model.safetensors"), os.path.join(d, "model.safetensors"))
    p = subprocess.run([saeflow, "forward", d, "--hook", "resid_post.0", "--out", os.path.join(d, "a.npy")],
                       input="1 2 3\n", capture_output=True, text=True)
    ok = p.returncode != 0 and expect in p.stderr and not os.path.exists(os.path.join(d, "a.npy"))
    print(f"{'ok' if ok else 'FAIL'}: {field} = {json.dumps(value)} refused: {p.stderr.strip()[:300]}")
    return ok


def main():
    checker, saeflow = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {name: write_case(tmp, name, cfg, dtype, 4321 + i) for i, (name, cfg, dtype) in enumerate(CASES)}
        rc = subprocess.run([checker] + list(dirs.values())).returncode
        bad = [r[1] for r in REFUSED
               if not check_refused(saeflow, tmp, dirs[r[0]], r[1], copy.deepcopy(r[2]), r[3] if len(r) > 3 else r[1])]
    if rc or bad:
        print(f"FAILED: checker exit {rc}, not refused: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
