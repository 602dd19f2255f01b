#!/usr/bin/python3
"""The project's own trained checkpoint (data/suite, see data/suite/README.md) against the PyTorch
reference tools/reference_forward.py saved in data/suite/reference/: per-token loss within 1e-4,
every residual-stream hook within 1e-4 (relative to its scale), the same argmax predictions, and
the same greedy continuations of the reference prompts. Exits 77 if the reference is absent.

usage: test_suite.py SAEFLOW_EXE SOURCE_ROOT [REFERENCE_DIR]
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

SAEFLOW, ROOT = sys.argv[1], sys.argv[2]
REF = sys.argv[3] if len(sys.argv) > 3 else os.path.join(ROOT, "data", "suite", "reference")
failures = 0


def check(what, ok, detail=""):
    global failures
    print(f"{what:44s} {'ok' if ok else 'FAIL'} {detail}")
    failures += not ok


def run(args, stdin):
    p = subprocess.run([SAEFLOW, "forward"] + args, input=stdin, capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stderr)
    return p


def main():
    if not os.path.exists(os.path.join(REF, "fixture.json")):
        print(f"skip: no trained-suite reference in {REF}")
        sys.exit(77)
    with open(os.path.join(REF, "fixture.json")) as f:
        fixture = json.load(f)
    ckpt = fixture["checkpoint"]
    ckpt = ckpt if os.path.isabs(ckpt) else os.path.join(ROOT, ckpt)
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    ids = np.load(os.path.join(REF, "ids.npy"))
    want_loss = np.load(os.path.join(REF, "loss.npy")).astype(np.float64)
    want_argmax = np.load(os.path.join(REF, "argmax.npy"))
    B, T = ids.shape
    V, L = cfg["vocab_size"], cfg["num_hidden_layers"]
    stdin = "".join(" ".join(map(str, row)) + "\n" for row in ids)

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "x.npy")
        p = run([ckpt, "--logits", "--loss", "--out", out], stdin)
        check("logits run", p.returncode == 0)
        if p.returncode != 0:
            sys.exit(1)
        logits = np.load(out).astype(np.float64).reshape(B, T, V)
        lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        loss = lse[:, :-1] - np.take_along_axis(logits[:, :-1], ids[:, 1:, None].astype(np.int64), -1)[..., 0]
        err = float(np.max(np.abs(loss - want_loss)))
        check("per-token loss within 1e-4", err <= 1e-4, f"max abs err {err:.2e}")
        mean = float(p.stdout.split()[1])
        check("--loss mean within 1e-4", abs(mean - want_loss.mean()) <= 1e-4,
              f"{mean:.6f} vs {want_loss.mean():.6f}")
        check("trained: loss well below uniform", want_loss.mean() < 0.7 * math.log(V),
              f"{want_loss.mean():.3f} vs ln V {math.log(V):.3f}")
        # argmax: equal, except where our top two logits are within 1e-4 (a tie either way)
        top2 = np.sort(logits[:, :-1], -1)[..., -2:]
        ours = logits[:, :-1].argmax(-1)
        mism = (ours != want_argmax) & (top2[..., 1] - top2[..., 0] > 1e-4)
        check("argmax predictions", not mism.any(), f"{int(mism.sum())} differ")

        hooks = [("resid_pre.0", "embed.npy")] + [(f"resid_post.{i}", f"layer_{i:02d}.npy") for i in range(L)]
        for hook, fn in hooks:
            p = run([ckpt, "--hook", hook, "--out", out], stdin)
            want = np.load(os.path.join(REF, fn)).astype(np.float64).reshape(B * T, -1)
            ok = p.returncode == 0
            e = float("inf")
            if ok:
                got = np.load(out)
                e = float(np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want))))
            check(f"{hook} within 1e-4", ok and e <= 1e-4, f"rel err {e:.2e}")

    gens = fixture.get("greedy", [])
    stdin = "".join(" ".join(map(str, g["prompt_ids"])) + "\n" for g in gens)
    n = max((len(g["continuation_ids"]) for g in gens), default=0)
    p = run([ckpt, "--generate", str(n)], stdin)
    lines = p.stdout.splitlines() if p.returncode == 0 else []
    for g, line in zip(gens, lines + [""] * len(gens)):
        got = [int(t) for t in line.split()]
        check(f"greedy {g['prompt'][:24]!r}", got == g["ids"], repr(g["continuation"][:40]))


main()
sys.exit(1 if failures else 0)
