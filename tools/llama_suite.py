"""Shared pieces of the checkpoint suite (tools/train_suite.py,
tools/reference_forward.py): a Llama causal LM with Hugging Face
LlamaForCausalLM semantics and tensor names, a minimal safetensors
reader/writer, and the corpus split / packing rules.

Written from the published semantics of HF Llama:
  h = embed_tokens[ids]
  per layer:  h = h + o_proj(attn(rope(q_proj(n1(h))), rope(k_proj(n1(h))), v_proj(n1(h))))
              h = h + down_proj(silu(gate_proj(n2(h))) * up_proj(n2(h)))
  logits = lm_head(norm(h))
  RMSNorm: x.float() * rsqrt(mean(x^2) + eps), cast back, times weight
  RoPE: rotate_half (first half / second half), inv_freq = theta^(-2i/head_dim)
  GQA: query head j uses key/value head j // (n_heads / n_kv_heads)
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import safetensors_np  # tools/, beside this script

# ------------------------------------------------------------------ model


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(seq_len, head_dim, theta, device=None):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64)
                                .float() / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh = c["num_attention_heads"]
        self.nkv = c["num_key_value_heads"]
        self.hd = c["hidden_size"] // self.nh
        d = c["hidden_size"]
        self.q_proj = nn.Linear(d, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        if rep > 1:
            k = k[:, :, None].expand(b, self.nkv, rep, s, self.hd).reshape(b, self.nh, s, self.hd)
            v = v[:, :, None].expand(b, self.nkv, rep, s, self.hd).reshape(b, self.nh, s, self.hd)
        att = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd)
        att = att + mask
        att = F.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(att, v).transpose(1, 2).reshape(b, s, self.nh * self.hd)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        h = h + self.mlp(self.post_attention_layernorm(h))
        return h


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = Inner(c)
        self.tied = bool(c.get("tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def init_weights(self, seed):
        """HF init: normal(0, initializer_range) for linears and embeddings,
        ones for the norms."""
        g = torch.Generator().manual_seed(seed)
        std = self.config.get("initializer_range", 0.02)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("layernorm.weight") or name == "model.norm.weight":
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * std)

    def head_weight(self):
        return self.model.embed_tokens.weight if self.tied else self.lm_head.weight

    def forward(self, ids, want_hidden=False):
        """ids [b, s] -> logits [b, s, vocab] (float32) and, if asked, the
        list [embeddings, after layer 0, ..., after layer L-1, final norm]."""
        b, s = ids.shape
        c = self.config
        hd = c["hidden_size"] // c["num_attention_heads"]
        cos, sin = rope_cos_sin(s, hd, c["rope_theta"])
        mask = torch.full((s, s), float("-inf")).triu(1)
        h = self.model.embed_tokens(ids)
        hs = [h]
        for layer in self.model.layers:
            h = layer(h, cos, sin, mask)
            hs.append(h)
        h = self.model.norm(h)
        hs.append(h)
        logits = F.linear(h, self.head_weight()).float()
        return (logits, hs) if want_hidden else logits


def param_count(model):
    return sum(p.numel() for p in model.parameters())

# ------------------------------------------------------------ safetensors


def save_safetensors(path, tensors, dtype="BF16"):
    """tensors: name -> float tensor, stored as dtype (BF16: rounded to nearest even, as torch's
    .to(torch.bfloat16)), names sorted, metadata {"format": "pt"}."""
    assert dtype in ("BF16", "F32")
    conv = torch.bfloat16 if dtype == "BF16" else torch.float32
    safetensors_np.write(path, {k: safetensors_np.from_torch(tensors[k].detach().to(conv)) for k in sorted(tensors)},
                         {"format": "pt"})


def load_safetensors(path):
    """-> dict name -> float32 torch tensor (BF16, F16, F32 supported)."""
    out = {}
    for name, a in safetensors_np.read_f32(path).items():
        if a.dtype != np.float32:
            raise ValueError(f"{path}: {name} is not a floating tensor")
        out[name] = torch.from_numpy(a.copy())
    return out


def hf_config(c):
    """config.json as HF transformers writes it for LlamaForCausalLM."""
    keys = ["architectures", "attention_bias", "attention_dropout",
            "bos_token_id", "eos_token_id", "head_dim", "hidden_act",
            "hidden_size", "initializer_range", "intermediate_size",
            "max_position_embeddings", "mlp_bias", "model_type",
            "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
            "pretraining_tp", "rms_norm_eps", "rope_scaling", "rope_theta",
            "tie_word_embeddings", "torch_dtype", "transformers_version",
            "use_cache", "vocab_size"]
    return {k: c[k] for k in keys if k in c}


def save_checkpoint(model, outdir):
    os.makedirs(outdir, exist_ok=True)
    sd = {k: v for k, v in model.state_dict().items()}
    save_safetensors(os.path.join(outdir, "model.safetensors"), sd, "BF16")
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(hf_config(model.config), f, indent=2, sort_keys=True)
        f.write("\n")


def load_checkpoint(ckdir):
    with open(os.path.join(ckdir, "config.json")) as f:
        c = json.load(f)
    model = LlamaForCausalLM(c)
    sd = load_safetensors(os.path.join(ckdir, "model.safetensors"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError("checkpoint mismatch: missing %s unexpected %s"
                         % (missing, unexpected))
    model.eval()
    return model

# ------------------------------------------------------- corpus rules


# The corpus's document split (also written into each row's "split" field): one rule, in make_corpus.
from make_corpus import split_of  # noqa: E402,F401


def pack_document(ids, bos_id, seq=64):
    """Cut one document's token ids (no BOS/EOS) into consecutive chunks of
    `seq` tokens, prepend BOS to each; the last partial chunk is dropped."""
    return [[bos_id] + ids[i:i + seq] for i in range(0, len(ids) - seq + 1, seq)]
