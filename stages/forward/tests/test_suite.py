#!/usr/bin/python3
"""The project's own trained checkpoint (data/suite, see data/suite/README.md) against the PyTorch
reference tools/reference_forward.py saved in data/suite/reference/: per-token loss within 1e-4,
every residual-stream hook within 1e-4 (relative to its scale), also named as Hugging Face's
hidden_states.N (the last entry, after the final norm, refused), the same argmax predictions, and
the same greedy continuations of the reference prompts. Exits 77 if the reference is absent.

With the committed SAE (reference/sae, trained on resid_post.2; tools/reference_forward.py
--make-sae-fixture): the per-token loss with the SAE's reconstruction spliced in at its hook, from
`saeflow forward --sae` and from the forward stage (field loss_sae) in a pipeline zmq_in -> forward ->
{sae_eval, zmq_out}, within 1e-4 of the PyTorch forward hook's (also under a scalar normalisation),
and sae_eval's mean losses and increase against numpy means of the reference.

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


def test_sae_pipeline(tmp, ckpt, sae, ids, want_loss, want_sae):
    try:
        import zmq_pipeline
    except ImportError as e:
        print(f"skip the pipeline check: {e}")
        return
    if subprocess.run([SAEFLOW, "stages", "zmq_in"], capture_output=True).returncode != 0:
        print("skip the pipeline check: the bridge stages (zmq_in, zmq_out) are not built")
        return
    pipe, ep_in, ep_out = zmq_pipeline.write_flow(
        tmp, [f'model = "{ckpt}"', "hooks = resid_post.2", f'sae = "{sae}"', "threads = 1"],
        f"""stage ev = sae_eval {{
    input = fwd
    sae_dir = "{sae}"
    out = "{tmp}/eval.json"
}}
""")
    B = ids.shape[0]
    halves = [{"tokens": np.ascontiguousarray(h), "split": "test"} for h in (ids[:B // 2], ids[B // 2:])]
    rc, out, got = zmq_pipeline.run(SAEFLOW, pipe, ep_in, ep_out, halves)
    check("sae pipeline exit", rc == 0, "" if rc == 0 else out)
    if len(got) != 2 or any("loss_sae" not in m for m in got):
        check("loss_sae on every message", False, f"{len(got)} messages")
        return
    # BOS dropped: column t holds the loss of predicting ids[t + 2]; NaN at the end
    lg = np.concatenate([m["loss_sae"] for m in got])
    ok = lg.shape == (B, ids.shape[1] - 1) and bool(np.all(np.isnan(lg[:, -1])))
    err = float(np.max(np.abs(lg[:, :-1] - want_sae[:, 1:]))) if ok else float("inf")
    check("stage loss_sae within 1e-4 of PyTorch", ok and err <= 1e-4, f"max abs err {err:.2e}")
    with open(os.path.join(tmp, "eval.json")) as f:
        ev = json.load(f)
    m, ms = want_loss[:, 1:].mean(), want_sae[:, 1:].mean()
    ok = ev.get("loss_tokens") == want_loss[:, 1:].size and abs(ev["loss"] - m) <= 1e-4 and \
        abs(ev["loss_sae"] - ms) <= 1e-4 and abs(ev["loss_increase"] - (ms - m)) <= 1e-4
    check("sae_eval: loss, loss_sae, increase", ok,
          f"{ev.get('loss')} {ev.get('loss_sae')} {ev.get('loss_increase')} vs {m:.6f} {ms:.6f}")
    # sae_eval of the resid_post.2 SAE on resid_post.1 activations: an error, no eval.json
    os.unlink(os.path.join(tmp, "eval.json"))
    pipe, ep_in, ep_out = zmq_pipeline.write_flow(
        tmp, [f'model = "{ckpt}"', "hooks = resid_post.1", "threads = 1"],
        f"""stage ev = sae_eval {{
    input = fwd
    sae_dir = "{sae}"
    out = "{tmp}/eval.json"
}}
""")
    rc, out, got = zmq_pipeline.run(SAEFLOW, pipe, ep_in, ep_out, halves)
    check("sae_eval on another hook's activations: refused", rc == 1 and "trained on hook resid_post.2, but these "
          "activations are of hook resid_post.1" in out and not os.path.exists(os.path.join(tmp, "eval.json")),
          f"exit {rc}: {out.strip()[-400:]}")


def test_sae(ckpt, ids, want_loss):
    sae = os.path.join(REF, "sae")
    if not os.path.exists(os.path.join(sae, "config.json")):
        print(f"skip the SAE splice checks: no {sae}")
        return
    want_sae = np.load(os.path.join(REF, "loss_sae.npy")).astype(np.float64)
    want_scalar = np.load(os.path.join(REF, "loss_sae_scalar.npy")).astype(np.float64)
    with open(os.path.join(sae, "reference.json")) as f:
        scale = json.load(f)["scalar"]["scale"]
    B, T = ids.shape
    stdin = "".join(" ".join(map(str, row)) + "\n" for row in ids)
    with tempfile.TemporaryDirectory() as tmp:
        # the same weights read with a scalar normalisation
        scalar = os.path.join(tmp, "scalar")
        os.makedirs(scalar)
        os.symlink(os.path.abspath(os.path.join(sae, "model.safetensors")), os.path.join(scalar, "model.safetensors"))
        with open(os.path.join(sae, "config.json")) as f:
            cfg = json.load(f)
        cfg.update(saeflow_normalize="scalar", saeflow_norm_scale=scale)
        with open(os.path.join(scalar, "config.json"), "w") as f:
            json.dump(cfg, f)
        out = os.path.join(tmp, "l.npy")
        for what, d, extra, want in (("recorded hook", sae, [], want_sae),
                                     ("--sae-hook", sae, ["--sae-hook", "resid_post.2"], want_sae),
                                     ("scalar norm", scalar, [], want_scalar)):
            p = run([ckpt, "--sae", d, "--loss-out", out] + extra, stdin)
            ok = p.returncode == 0
            e0 = e1 = d_mean = float("inf")
            if ok:
                got = np.load(out).astype(np.float64).reshape(B, T, 2)
                ok = bool(np.all(np.isnan(got[:, -1])))
                e0 = float(np.max(np.abs(got[:, :-1, 0] - want_loss)))
                e1 = float(np.max(np.abs(got[:, :-1, 1] - want)))
                lines = p.stdout.split()
                d_mean = abs(float(lines[lines.index("loss_sae") + 1]) - want.mean())
            check(f"cli --sae ({what}): clean loss", ok and e0 <= 1e-4, f"max abs err {e0:.2e}")
            check(f"cli --sae ({what}): spliced loss", ok and e1 <= 1e-4 and d_mean <= 1e-4,
                  f"max abs err {e1:.2e}, mean {d_mean:.2e}")
        check("the SAE raises the loss (and not absurdly)", 0 < want_sae.mean() - want_loss.mean() < 1.0,
              f"{want_loss.mean():.3f} -> {want_sae.mean():.3f}")
        p = run([ckpt, "--sae", sae, "--sae-hook", "mlp_hidden.2", "--loss"], stdin)
        check("cli --sae at a hook of another width", p.returncode != 0 and "512 wide" in p.stderr,
              p.stderr.strip())
        # An SAE is refused where it was not trained (another hook; another checkpoint as its config
        # records), naming both sides and the override, which splices it anyway with a warning.
        p = run([ckpt, "--sae", sae, "--sae-hook", "resid_post.1", "--loss"], stdin)
        check("cli --sae at another hook: refused", p.returncode == 1 and "trained on hook resid_post.2, but these "
              "activations are of hook resid_post.1" in p.stderr and "accept_sae_mismatch" in p.stderr, p.stderr.strip())
        p = run([ckpt, "--sae", sae, "--sae-hook", "resid_post.1", "--loss", "--accept-sae-mismatch"], stdin)
        check("cli --sae at another hook: accepted, logged", p.returncode == 0 and "used anyway" in p.stderr,
              p.stderr.strip())
        other = os.path.join(tmp, "other-checkpoint")
        os.makedirs(other)
        os.symlink(os.path.abspath(os.path.join(sae, "model.safetensors")), os.path.join(other, "model.safetensors"))
        with open(os.path.join(other, "config.json"), "w") as f:
            json.dump({**cfg, "saeflow_normalize": "unit",
                       "saeflow_training": {"hook": "resid_post.2", "checkpoint": "step-999999"}}, f)
        p = run([ckpt, "--sae", other, "--loss"], stdin)
        check("cli --sae of another checkpoint: refused", p.returncode == 1 and "trained on checkpoint step-999999, "
              f"but these activations are of checkpoint {os.path.basename(ckpt.rstrip('/'))}" in p.stderr,
              p.stderr.strip())
        test_sae_pipeline(tmp, ckpt, sae, ids, want_loss, want_sae)


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

        # Hugging Face's indexing, as transformers' output_hidden_states builds it: the embeddings,
        # each block's output but the last, then the final norm of the last block's output.
        hf = ["embed.npy"] + [f"layer_{i:02d}.npy" for i in range(L - 1)] + ["final_norm.npy"]
        for n, fn in enumerate(hf[:L]):
            p = run([ckpt, "--hook", f"hidden_states.{n}", "--out", out], stdin)
            want = np.load(os.path.join(REF, fn)).astype(np.float64).reshape(B * T, -1)
            e = float("inf")
            if p.returncode == 0:
                got = np.load(out)
                e = float(np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want))))
            check(f"hidden_states.{n} = HF hidden_states[{n}]", p.returncode == 0 and e <= 1e-4, f"rel err {e:.2e}")
        p = run([ckpt, "--hook", f"hidden_states.{L}", "--out", out], stdin)
        check(f"hidden_states.{L} (after the final norm) refused", p.returncode != 0 and "final norm" in p.stderr
              and f"resid_post.{L - 1}" in p.stderr, p.stderr.strip())

    test_sae(ckpt, ids, want_loss)

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
