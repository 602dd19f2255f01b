#!/usr/bin/python3
"""make_random_checkpoint.py — random-weight checkpoints with LLM-jp-3's published shapes, written as
Hugging Face writes large models: bf16 tensors in ~5 GB safetensors shards plus
model.safetensors.index.json (one model.safetensors when it fits in one shard, as 1.8B does), and a
config.json the forward stage loads.

It streams: each tensor is generated in row chunks and written straight to its shard, so memory
stays at one chunk (~64 MiB) whatever the model's size (13B is ~27 GB on disk). Only numpy.

Shapes (the config.json of each model on Hugging Face, read 2026-12-03):
  llm-jp/llm-jp-3-1.8b  hidden 2048, 24 layers, 16 heads (kv 16), intermediate 7168, vocab 99584
                        (the one 3.74 GB model.safetensors matches 24 layers, untied head)
  llm-jp/llm-jp-3-3.7b  hidden 3072, 28 layers, 24 heads (kv 24), intermediate 8192, vocab 99584
  llm-jp/llm-jp-3-13b   hidden 5120, 40 layers, 40 heads (kv 40), intermediate 13824, vocab 99584
All: LlamaForCausalLM, silu, rms_norm_eps 1e-5, rope_theta 10000, max positions 4096, no biases,
untied embeddings, torch_dtype bfloat16.

Usage: tools/make_random_checkpoint.py {1.8b,3.7b,13b,tiny} OUT_DIR [--seed N] [--shard-bytes N]
OUT_DIR must not exist (finished outputs are not overwritten). "tiny" is a 3-layer model for tests;
--shard-bytes makes its shards small so that the sharded path is exercised.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

SHAPES = {
    "1.8b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                 intermediate_size=7168, vocab_size=99584),
    "3.7b": dict(hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=24,
                 intermediate_size=8192, vocab_size=99584),
    "13b": dict(hidden_size=5120, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                intermediate_size=13824, vocab_size=99584),
    "tiny": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=96, vocab_size=500),
}
CHUNK_ELEMS = 32 << 20  # floats generated at once (128 MiB of f32, 64 MiB of bf16)


def config(shape):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
         "attention_bias": False, "mlp_bias": False, "max_position_embeddings": 4096,
         "rms_norm_eps": 1e-5, "rope_theta": 10000, "rope_scaling": None, "tie_word_embeddings": False,
         "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
    c.update(shape)
    return c


def tensors(c):
    """(name, shape, init) in Hugging Face's order; init is 'random' (write_tensor) or 'ones'."""
    d, ff, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = d // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    out = [("model.embed_tokens.weight", (V, d), "random")]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (d,), "ones"),
                (p + "self_attn.q_proj.weight", (d, d), "random"),
                (p + "self_attn.k_proj.weight", (kv, d), "random"),
                (p + "self_attn.v_proj.weight", (kv, d), "random"),
                (p + "self_attn.o_proj.weight", (d, d), "random"),
                (p + "post_attention_layernorm.weight", (d,), "ones"),
                (p + "mlp.gate_proj.weight", (ff, d), "random"),
                (p + "mlp.up_proj.weight", (ff, d), "random"),
                (p + "mlp.down_proj.weight", (d, ff), "random")]
    out += [("model.norm.weight", (d,), "ones"), ("lm_head.weight", (V, d), "random")]
    return out


def to_bf16(x):
    """float32 -> bf16 bits, round to nearest even (as torch's .to(torch.bfloat16))."""
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_tensor(f, shape, init, rng):
    """Random weights straight as bf16 bits (a normal draw plus rounding was ~10 MB/s here, too
    slow for 27 GB): random sign and mantissa, exponent fixed, so |w| is uniform-ish in
    [2^-7, 2^-6) = [0.0078, 0.0156), the scale of a trained model's weights."""
    n = int(np.prod(shape))
    for at in range(0, n, CHUNK_ELEMS):
        k = min(CHUNK_ELEMS, n - at)
        if init == "ones":
            f.write(to_bf16(np.ones(k, np.float32)).tobytes())
        else:
            bits = rng.integers(0, 1 << 16, k, dtype=np.uint16)
            f.write(((bits & 0x807F) | 0x3C00).astype(np.uint16).tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(SHAPES))
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-bytes", type=int, default=5_000_000_000, help="shard size (HF's 5GB default)")
    a = ap.parse_args()
    if os.path.exists(a.out):
        sys.exit(f"{a.out} exists: give a new directory (finished outputs are not overwritten)")
    cfg = config(SHAPES[a.model])
    ts = tensors(cfg)
    # Shards as Hugging Face cuts them: tensors in order, a new shard when the next would overflow.
    shards, cur, size = [], [], 0
    for t in ts:
        nb = int(np.prod(t[1])) * 2
        if cur and size + nb > a.shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += nb
    shards.append(cur)
    tmp = a.out + ".tmp"
    os.makedirs(tmp)
    rng = np.random.default_rng(a.seed)
    weight_map, total = {}, 0
    for i, sh in enumerate(shards):
        # one shard is a plain model.safetensors without an index, as Hugging Face saves it
        fname = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, _ in sh:
            nb = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
            off += nb
            weight_map[name] = fname
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)  # tensor data 8-byte aligned, as the safetensors library pads
        with open(os.path.join(tmp, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb)
            for name, shape, init in sh:
                write_tensor(f, shape, init, rng)
        total += off
        print(f"{fname}: {len(sh)} tensors, {off / 1e9:.2f} GB", flush=True)
    if len(shards) > 1:
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    os.rename(tmp, a.out)
    print(f"{a.out}: {a.model}, {total / 1e9:.2f} GB bf16 in {len(shards)} shards")


if __name__ == "__main__":
    main()
