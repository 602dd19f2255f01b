#!/usr/bin/python3
"""lm_optim.h against PyTorch: AdamW (two parameter groups as tools/train_suite.py: weight decay on
matrices, none on vectors), global-norm clipping (clip_grad_norm_) and the learning rate schedules,
on random tensors over several steps, every weight and moment after each run within float32
rounding of torch.optim.AdamW's. The schedules against formulas written here (cosine: train_suite's
own lr_at). The seeded initialisation: norms 1, matrices normal(0, std) (mean, std, a normality
check), the same seed gives the same bits, another seed other numbers.

  test_optim.py OPTIM_DRIVER TOOLS_DIR
"""
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

DRIVER, TOOLS = os.path.abspath(sys.argv[1]), sys.argv[2]
sys.path.insert(0, TOOLS)
import safetensors_np as st  # noqa: E402

failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def torch_lr(kind, lr, warmup, total, decay, min_ratio, step):
    if step < warmup:
        return lr * (step + 1) / warmup
    lo = lr * min_ratio
    if kind == "constant":
        return lr
    if kind == "cosine":
        sys.path.insert(0, TOOLS)
        from train_suite import lr_at  # the suite's own schedule (min_ratio 0.1)
        if min_ratio == 0.1:
            return lr_at(step, total, lr, warmup)
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * p))
    # wsd: stable at lr until the last `decay` steps, then linear so that the last step has lo
    start = total - decay
    if step < start or decay == 0:
        return lr
    return lr + (lo - lr) * min(1.0, (step - start + 1) / decay)


def run_adamw(tmp, shapes, steps, opts, seed):
    rng = np.random.default_rng(seed)
    w0 = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in shapes]
    grads = [[(rng.standard_normal(s) * rng.uniform(0.01, 3)).astype(np.float32) for s in shapes]
             for _ in range(steps)]
    tensors = {f"w.{k}": w for k, w in enumerate(w0)}
    for s, gs in enumerate(grads):
        tensors.update({f"g.{s}.{k}": g for k, g in enumerate(gs)})
    inp, out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
    st.write(inp, tensors, {k: str(v) for k, v in opts.items()})
    subprocess.run([DRIVER, "adamw", inp, out], check=True)
    got = st.read_f32(out)
    raw = st.read(out)[0]
    got["lr"], got["norm"] = raw["lr"][1], raw["norm"][1]  # F64 as stored (read_f32 narrows)

    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in w0]
    decay = [p for p in params if p.dim() >= 2]
    nodecay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": opts["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=opts["lr"], betas=(opts["beta1"], opts["beta2"]), eps=opts["eps"])
    norms, lrs = [], []
    for s in range(steps):
        for p, g in zip(params, grads[s]):
            p.grad = torch.from_numpy(g.copy())
        if opts["clip"] > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, opts["clip"])))
        else:
            norms.append(math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params)))
        lr = torch_lr(opts["schedule"], opts["lr"], opts["warmup"], opts["total"], opts["decay"], opts["min_ratio"], s)
        lrs.append(lr)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
    name = f"{opts['schedule']} clip {opts['clip']} wd {opts['weight_decay']}"
    check(np.allclose(got["lr"], lrs, rtol=1e-12, atol=0), f"{name}: learning rates")
    check(np.allclose(got["norm"], norms, rtol=1e-5), f"{name}: gradient norms before clipping")
    worst = {"w": 0.0, "m": 0.0, "v": 0.0}
    for k, p in enumerate(params):
        st_ = opt.state[p]
        for key, ref in (("w", p.detach().numpy()), ("m", st_["exp_avg"].numpy()), ("v", st_["exp_avg_sq"].numpy())):
            scale = max(float(np.abs(ref).max()), 1e-30)
            worst[key] = max(worst[key], float(np.abs(got[f"{key}.{k}"] - ref).max()) / scale)
    # the weights moved: compare the update itself, not only the weights
    moved = max(float(np.abs(p.detach().numpy() - w).max()) for p, w in zip(params, w0))
    wdiff = max(float(np.abs(got[f"w.{k}"] - p.detach().numpy()).max()) for k, p in enumerate(params))
    check(moved > 1e-4, f"{name}: the weights moved ({moved:.3g})")
    check(wdiff <= 1e-4 * moved, f"{name}: weights within {wdiff:.3g} of torch's (updates moved them {moved:.3g})")
    check(worst["m"] < 1e-5 and worst["v"] < 1e-5,
          f"{name}: moments within float32 rounding of torch's (relative {worst['m']:.2g}, {worst['v']:.2g})")


def main():
    tmp = tempfile.mkdtemp(prefix="lm_optim_")
    shapes = [(64, 48), (48,), (96, 48), (48, 32), (32,)]
    base = {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "clip": 1.0, "schedule": "cosine",
            "lr": 2e-3, "warmup": 3, "total": 12, "decay": 0, "min_ratio": 0.1}
    run_adamw(tmp, shapes, 12, base, 1)
    run_adamw(tmp, shapes, 10, dict(base, schedule="wsd", decay=4, min_ratio=0.0, clip=0.0, weight_decay=0.5,
                                    beta2=0.999, total=10), 2)
    run_adamw(tmp, shapes, 6, dict(base, schedule="constant", warmup=0, clip=0.5, eps=1e-6), 3)

    # schedules alone, longer
    for args in (("cosine", 1e-3, 10, 100, 0, 0.1), ("cosine", 1e-3, 0, 50, 0, 0.0), ("wsd", 3e-4, 5, 60, 20, 0.1),
                 ("wsd", 3e-4, 0, 30, 0, 0.1), ("constant", 5e-4, 7, 0, 0, 0.0)):
        n = max(args[3], 20) + 5
        out = subprocess.run([DRIVER, "lr", *map(str, args), str(n)], check=True, capture_output=True, text=True).stdout
        got = [float(x) for x in out.split()]
        want = [torch_lr(*args, s) for s in range(n)]
        check(len(got) == n and np.allclose(got, want, rtol=1e-12, atol=0), f"schedule {args}")
    bad = subprocess.run([DRIVER, "lr", "wsd", "1e-3", "10", "20", "15", "0.1", "5"], capture_output=True, text=True)
    check(bad.returncode != 0 and "decay_steps" in bad.stderr, f"wsd decay longer than the run refused: {bad.stderr.strip()}")
    bad = subprocess.run([DRIVER, "lr", "linear", "1e-3", "10", "20", "0", "0.1", "5"], capture_output=True, text=True)
    check(bad.returncode != 0 and "cosine" in bad.stderr, f"unknown schedule refused: {bad.stderr.strip()}")

    # initialisation
    shapes = {"w.0": (512, 192), "w.1": (192,), "w.2": (256, 64)}
    inp = os.path.join(tmp, "init_in.safetensors")
    st.write(inp, {k: np.zeros(s, np.float32) for k, s in shapes.items()})
    outs = []
    for i, seed in enumerate((7, 7, 8)):
        o = os.path.join(tmp, f"init{i}.safetensors")
        subprocess.run([DRIVER, "init", inp, o, str(seed), "0.02"], check=True)
        outs.append(st.read_f32(o))
    a = outs[0]["w.0"].astype(np.float64)
    check(np.all(outs[0]["w.1"] == 1), "norm weights are 1")
    check(abs(a.mean()) < 3 * 0.02 / math.sqrt(a.size) and abs(a.std() / 0.02 - 1) < 0.01,
          f"matrix ~ normal(0, 0.02): mean {a.mean():.2e} std {a.std():.5f}")
    z = np.sort(a.ravel() / 0.02)
    q = np.array([-1.6449, -0.6745, 0.0, 0.6745, 1.6449])  # normal quantiles 5, 25, 50, 75, 95 %
    emp = z[(np.array([0.05, 0.25, 0.5, 0.75, 0.95]) * (len(z) - 1)).astype(int)]
    check(np.allclose(emp, q, atol=0.02), f"quantiles of a normal: {np.round(emp, 3)}")
    check(all(np.array_equal(outs[0][k], outs[1][k]) for k in shapes), "same seed, same bits")
    check(not np.array_equal(outs[0]["w.0"], outs[2]["w.0"]), "another seed, other weights")
    check(abs(np.corrcoef(outs[0]["w.0"][:64, :64].ravel(), outs[0]["w.2"][:64, :64].ravel())[0, 1]) < 0.05,
          "tensors get independent streams")
    if failures:
        print(f"kept {tmp} for inspection", flush=True)
    else:
        shutil.rmtree(tmp)
    sys.exit(1 if failures else 0)


main()
