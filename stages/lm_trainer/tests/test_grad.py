#!/usr/bin/python3
"""`saeflow lm grad` against PyTorch autograd in float64.

For small random Llama checkpoints (grouped-query, multi-head and multi-query attention,
tied and untied embeddings, head_dim other than hidden_size / heads, partial rotary dims, llama3
and linear RoPE scaling), written here in Hugging
Face's layout (config.json + model.safetensors, F32), the command's mean next-token cross-entropy
over sequences of different lengths (on 1 and 2 threads) must be within 1e-5 relative of this file's own float64 Llama
(written from Hugging Face's LlamaForCausalLM semantics, independent of the C code), and every
parameter's gradient within 1e-4 of that tensor's largest reference magnitude; a second run on
2 threads writes the same bytes, and so does OpenBLAS's own thread count. Bad input (a
malformed id, an id outside the vocabulary, empty stdin, a 1-token sequence, a sequence longer
than the model allows, an existing --out, an untrainable config: biases, GPT-2, Qwen2, rope_scaling)
fails with a clear message and
writes nothing.

usage: test_grad.py SAEFLOW_EXE
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
import safetensors_np  # noqa: E402

SAEFLOW = sys.argv[1]
failures = 0


def check(what, ok, detail=""):
    global failures
    print(f"{what:58s} {'ok' if ok else 'FAIL'} {detail}", flush=True)
    failures += not ok


# ------------------------------------------------------------------ the float64 reference


def make_params(c, seed):
    """Random weights (std large enough that the loss and its gradient are far from uniform)."""
    g = torch.Generator().manual_seed(seed)
    d, hd, H, KV, ff, V = (c["hidden_size"], c["head_dim"], c["num_attention_heads"],
                           c["num_key_value_heads"], c["intermediate_size"], c["vocab_size"])

    def rnd(*shape, std):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * std).requires_grad_()

    p = {"model.embed_tokens.weight": rnd(V, d, std=1.0)}
    for l in range(c["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        p[pre + "input_layernorm.weight"] = (1 + rnd(d, std=0.2)).detach().requires_grad_()
        p[pre + "self_attn.q_proj.weight"] = rnd(H * hd, d, std=0.6 / math.sqrt(d))
        p[pre + "self_attn.k_proj.weight"] = rnd(KV * hd, d, std=0.6 / math.sqrt(d))
        p[pre + "self_attn.v_proj.weight"] = rnd(KV * hd, d, std=1 / math.sqrt(d))
        p[pre + "self_attn.o_proj.weight"] = rnd(d, H * hd, std=1 / math.sqrt(H * hd))
        p[pre + "post_attention_layernorm.weight"] = (1 + rnd(d, std=0.2)).detach().requires_grad_()
        p[pre + "mlp.gate_proj.weight"] = rnd(ff, d, std=1 / math.sqrt(d))
        p[pre + "mlp.up_proj.weight"] = rnd(ff, d, std=1 / math.sqrt(d))
        p[pre + "mlp.down_proj.weight"] = rnd(d, ff, std=1 / math.sqrt(ff))
    p["model.norm.weight"] = (1 + rnd(d, std=0.2)).detach().requires_grad_()
    if not c["tie_word_embeddings"]:
        p["lm_head.weight"] = rnd(V, d, std=1 / math.sqrt(d))
    return p


def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def inv_freq(c, rd):
    """HF's RoPE inverse frequencies, with linear or llama3 rope_scaling (_compute_llama3_parameters)."""
    inv = c["rope_theta"] ** (-torch.arange(0, rd, 2, dtype=torch.float64) / rd)
    rs = c.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        inv = inv / rs["factor"]
    elif kind == "llama3":
        old, lo, hi, f = rs["original_max_position_embeddings"], rs["low_freq_factor"], rs["high_freq_factor"], rs["factor"]
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * inv / f + smooth * inv
        inv = torch.where(wavelen > old / lo, inv / f, torch.where(wavelen < old / hi, inv, mid))
    return inv


def rope(x, t, rd, inv):
    """HF rotate_half RoPE on the first rd dims of x [heads, T, hd]."""
    ang = torch.outer(t, inv)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    xr, xp = x[..., :rd], x[..., rd:]
    rot = torch.cat([-xr[..., rd // 2:], xr[..., :rd // 2]], -1)
    return torch.cat([xr * cos + rot * sin, xp], -1)


def seq_loss_sum(c, p, ids):
    """Summed next-token cross-entropy of one sequence (list of ids)."""
    d, hd, H, KV = c["hidden_size"], c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
    eps = c["rms_norm_eps"]
    rd = int(hd * c.get("partial_rotary_factor", 1.0))
    inv = inv_freq(c, rd)
    x_ids = torch.tensor(ids[:-1])
    T = len(ids) - 1
    t = torch.arange(T, dtype=torch.float64)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    h = p["model.embed_tokens.weight"][x_ids]
    for l in range(c["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        n = rmsnorm(h, p[pre + "input_layernorm.weight"], eps)
        q = (n @ p[pre + "self_attn.q_proj.weight"].T).view(T, H, hd).transpose(0, 1)
        k = (n @ p[pre + "self_attn.k_proj.weight"].T).view(T, KV, hd).transpose(0, 1)
        v = (n @ p[pre + "self_attn.v_proj.weight"].T).view(T, KV, hd).transpose(0, 1)
        q, k = rope(q, t, rd, inv), rope(k, t, rd, inv)
        k, v = k.repeat_interleave(H // KV, 0), v.repeat_interleave(H // KV, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, -1)
        o = (att @ v).transpose(0, 1).reshape(T, H * hd)
        h = h + o @ p[pre + "self_attn.o_proj.weight"].T
        n = rmsnorm(h, p[pre + "post_attention_layernorm.weight"], eps)
        a = torch.nn.functional.silu(n @ p[pre + "mlp.gate_proj.weight"].T) * (n @ p[pre + "mlp.up_proj.weight"].T)
        h = h + a @ p[pre + "mlp.down_proj.weight"].T
    h = rmsnorm(h, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if c["tie_word_embeddings"] else p["lm_head.weight"]
    logits = h @ head.T
    return torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum")


def reference(c, p, seqs):
    total = sum(seq_loss_sum(c, p, s) for s in seqs)
    loss = total / sum(len(s) - 1 for s in seqs)
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in p.items()}


# ------------------------------------------------------------------ checkpoints and the command


def config(**kw):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48,
         "num_hidden_layers": 2, "vocab_size": 61, "max_position_embeddings": 24, "rms_norm_eps": 1e-5,
         "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu", "attention_bias": False,
         "mlp_bias": False, "rope_scaling": None, "bos_token_id": 1}
    c.update(kw)
    return c


def write_checkpoint(dirname, c, p):
    os.makedirs(dirname, exist_ok=True)
    with open(os.path.join(dirname, "config.json"), "w") as f:
        json.dump(c, f)
    safetensors_np.write(os.path.join(dirname, "model.safetensors"),
                         {k: v.detach().numpy().astype(np.float32) for k, v in sorted(p.items())}, {"format": "pt"})


def lm_grad(model, stdin, out, *extra, env=None):
    return subprocess.run([SAEFLOW, "lm", "grad", model, "--out", out, *extra], input=stdin,
                          capture_output=True, text=True, env=env)


def random_seqs(V, lengths, seed):
    rng = np.random.default_rng(seed)
    return [[int(x) for x in rng.integers(0, V, n)] for n in lengths]


CASES = [
    ("gqa-tied", config()),
    ("mha-untied", config(num_key_value_heads=4, head_dim=12, tie_word_embeddings=False, rope_theta=500.0)),
    ("mqa-untied-partial-rope", config(num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                       partial_rotary_factor=0.5, tie_word_embeddings=False, num_hidden_layers=3,
                                       hidden_size=40, intermediate_size=72)),
    ("gqa-tied-llama3-rope", config(rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                                  "high_freq_factor": 2.0, "original_max_position_embeddings": 16})),
    ("mha-untied-linear-rope", config(num_key_value_heads=4, tie_word_embeddings=False,
                                      rope_scaling={"type": "linear", "factor": 2.0})),
]


def grad_case(tmp, name, c, seed):
    # The float32 model is what the C code sees: round the reference's weights to float32 too.
    p = make_params(c, seed)
    with torch.no_grad():
        for v in p.values():
            v.copy_(v.float().double())
    model = os.path.join(tmp, name)
    write_checkpoint(model, c, p)
    seqs = random_seqs(c["vocab_size"], [7, 12, 3, 12, 25, 7, 2], seed)  # 25 = max_position_embeddings + 1
    want_loss, want = reference(c, p, seqs)
    stdin = "".join(" ".join(map(str, s)) + "\n" for s in seqs)
    outs = {}
    for threads in ("1", "2"):
        out = outs[threads] = os.path.join(tmp, f"{name}.t{threads}.grad.safetensors")
        r = lm_grad(model, stdin, out, "--threads", threads, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        if r.returncode != 0:
            check(f"{name} --threads {threads}: lm grad runs", False, r.stderr.strip())
            return
        compare(f"{name} --threads {threads}", float(r.stdout.strip()), safetensors_np.read_f32(out), want_loss, want)
    # The same thread count gives the same bits.
    again = os.path.join(tmp, name + ".again.grad.safetensors")
    r = lm_grad(model, stdin, again, "--threads", "2")
    check(f"{name}: --threads 2 twice, identical files",
          r.returncode == 0 and open(again, "rb").read() == open(outs["2"], "rb").read())
    # OpenBLAS's own thread setting does not change them (it runs on one thread inside lm's threads).
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")
    for threads in ("1", "2"):
        other = os.path.join(tmp, f"{name}.blas2.t{threads}.grad.safetensors")
        r = lm_grad(model, stdin, other, "--threads", threads, env=dict(env))
        check(f"{name}: --threads {threads}, OPENBLAS_NUM_THREADS=2: identical file",
              r.returncode == 0 and open(other, "rb").read() == open(outs[threads], "rb").read())


def compare(name, got_loss, got, want_loss, want):
    check(f"{name}: loss {got_loss:.6f} vs {want_loss:.6f}", abs(got_loss - want_loss) <= 1e-5 * abs(want_loss),
          f"rel {abs(got_loss - want_loss) / abs(want_loss):.1e}")
    check(f"{name}: one gradient per parameter, HF names", sorted(got) == sorted(want),
          f"extra {sorted(set(got) - set(want))} missing {sorted(set(want) - set(got))}")
    worst, worst_name = 0.0, ""
    for k in want:
        if k not in got or got[k].shape != want[k].shape:
            check(f"{name}: {k} shape", False, f"{None if k not in got else got[k].shape} vs {want[k].shape}")
            continue
        scale = np.abs(want[k]).max()
        err = np.abs(got[k].astype(np.float64) - want[k]).max() / scale
        if err > worst:
            worst, worst_name = err, k
        if not err <= 1e-4:
            check(f"{name}: {k}", False, f"max error {err:.2e} of its largest |g| {scale:.3g}")
    check(f"{name}: every gradient within 1e-4 of its max |g|", worst <= 1e-4, f"worst {worst:.1e} ({worst_name})")


def bad_input(tmp):
    c = config()
    model = os.path.join(tmp, "bad-model")
    write_checkpoint(model, c, make_params(c, 7))
    out = os.path.join(tmp, "bad.safetensors")
    cases = [
        ("malformed id", "3 4 x5 6\n", "not a token id"),
        ("negative id", "3 -4 5\n", "not a token id"),
        ("id >= vocab", "3 4 5\n1 2 61 3\n", "outside the vocabulary"),
        ("empty stdin", "", "no token ids on stdin"),
        ("blank lines only", "\n  \n", "no token ids on stdin"),
        ("1-token sequence", "3 4 5\n9\n", "at least 2"),
        ("sequence too long", " ".join(["3"] * 26) + "\n", "max_position_embeddings"),
    ]
    for what, stdin, want in cases:
        r = lm_grad(model, stdin, out)
        check(f"bad input: {what}", r.returncode == 1 and want in r.stderr and not os.path.exists(out),
              r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc {r.returncode}, no message")
    # An existing output is kept unless --force.
    with open(out, "w") as f:
        f.write("keep")
    r = lm_grad(model, "3 4 5\n", out)
    check("existing --out kept", r.returncode != 0 and "--force" in r.stderr and open(out).read() == "keep",
          r.stderr.strip())
    r = lm_grad(model, "3 4 5\n", out, "--force")
    check("--force replaces it", r.returncode == 0 and len(safetensors_np.read_f32(out)) > 0, r.stderr.strip())
    # A config with parts the backward does not have.
    c2 = config(attention_bias=True)
    bias_model = os.path.join(tmp, "bias-model")
    p = make_params(c2, 8)
    for l in range(c2["num_hidden_layers"]):
        for proj, n in (("q", 32), ("k", 16), ("v", 16), ("o", 32)):
            p[f"model.layers.{l}.self_attn.{proj}_proj.bias"] = torch.zeros(n, dtype=torch.float64)
    write_checkpoint(bias_model, c2, p)
    out2 = os.path.join(tmp, "bias.safetensors")
    r = lm_grad(bias_model, "3 4 5\n", out2)
    check("untrainable config (attention_bias)", r.returncode == 1 and "cannot train" in r.stderr
          and not os.path.exists(out2), r.stderr.strip())
    # Another architecture (the forward's GPT-2 and Qwen2 fixtures), and rope_scaling.
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "forward", "tests", "fixtures")
    for fx, want in (("gpt2", "cannot train a GPT2LMHeadModel"), ("qwen2_bias", "cannot train a Qwen2ForCausalLM")):
        r = lm_grad(os.path.join(fixtures, fx), "3 4 5\n", out2)
        check(f"untrainable config ({fx})", r.returncode == 1 and want in r.stderr and not os.path.exists(out2),
              r.stderr.strip())
    c3 = config(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    rs_model = os.path.join(tmp, "rope-scaling-model")
    write_checkpoint(rs_model, c3, make_params(c3, 9))
    r = lm_grad(rs_model, "3 4 5\n", out2)
    check("untrainable config (rope_scaling dynamic)", r.returncode == 1 and "rope_scaling" in r.stderr
          and not os.path.exists(out2), r.stderr.strip())
    r = subprocess.run([SAEFLOW, "lm", "grad", "--help"], capture_output=True, text=True)
    check("lm grad --help", r.returncode == 0 and "usage: saeflow lm grad" in r.stdout)
    r = subprocess.run([SAEFLOW, "lm", "grad", model], capture_output=True, text=True, input="3 4\n")
    check("lm grad without --out: usage, exit 2", r.returncode == 2 and "usage" in r.stderr)


def suite_case(tmp):
    """The trained suite checkpoint (bf16 on disk, tied head): loss and gradients against the
    float64 reference loaded with its weights, and the loss equal to the forward stage's
    `saeflow forward --loss` (itself checked against PyTorch in stages/forward/tests)."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
    model = os.path.join(root, "data", "suite", "step-001000")
    if not os.path.exists(os.path.join(model, "config.json")):
        print("suite checkpoint missing: skipped the suite comparison")
        return
    with open(os.path.join(model, "config.json")) as f:
        c = json.load(f)
    p = {k: torch.from_numpy(v.astype(np.float64)).requires_grad_()
         for k, v in safetensors_np.read_f32(os.path.join(model, "model.safetensors")).items()}
    seqs = random_seqs(c["vocab_size"], [65, 65, 30, 129], 5)
    want_loss, want = reference(c, p, seqs)
    stdin = "".join(" ".join(map(str, s)) + "\n" for s in seqs)
    out = os.path.join(tmp, "suite.grad.safetensors")
    r = lm_grad(model, stdin, out)
    if r.returncode != 0:
        check("suite step-001000: lm grad runs", False, r.stderr.strip())
        return
    compare("suite step-001000", float(r.stdout.strip()), safetensors_np.read_f32(out), want_loss, want)
    f = subprocess.run([SAEFLOW, "forward", model, "--loss"], input=stdin, capture_output=True, text=True)
    fw = [float(x.split()[1]) for x in f.stdout.splitlines() if x.startswith("loss ")]
    got = float(r.stdout.strip())
    check(f"suite step-001000: loss {got:.6f} = saeflow forward's {fw[0] if fw else None}",
          len(fw) == 1 and abs(got - fw[0]) <= 1e-5 * fw[0])


def fixture_loss():
    """The forward stage's llama_gqa_bf16 fixture (bf16 on disk, GQA, tied, llama3 RoPE scaling):
    the same mean loss as `saeflow forward --loss`."""
    model = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "forward", "tests", "fixtures",
                         "llama_gqa_bf16")
    with open(os.path.join(model, "config.json")) as f:
        V = json.load(f)["vocab_size"]
    stdin = "".join(" ".join(map(str, s)) + "\n" for s in random_seqs(V, [9, 17, 17, 5], 3))
    with tempfile.TemporaryDirectory() as tmp:
        r = lm_grad(model, stdin, os.path.join(tmp, "g.safetensors"))
    f = subprocess.run([SAEFLOW, "forward", model, "--loss"], input=stdin, capture_output=True, text=True)
    fw = [float(x.split()[1]) for x in f.stdout.splitlines() if x.startswith("loss ")]
    ok = r.returncode == 0 and len(fw) == 1
    got = float(r.stdout.strip()) if ok else float("nan")
    check(f"fixture llama_gqa_bf16: loss {got:.6f} = saeflow forward's {fw[0] if fw else None}",
          ok and abs(got - fw[0]) <= 1e-5 * fw[0], r.stderr.strip() if r.returncode else "")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, c) in enumerate(CASES):
            grad_case(tmp, name, c, 100 + i)
        suite_case(tmp)
        fixture_loss()
        bad_input(tmp)
    print("FAILED" if failures else "all ok")
    sys.exit(1 if failures else 0)


main()
