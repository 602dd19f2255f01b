#!/usr/bin/python3
"""PyTorch reference of saeflow's TopK-SAE training recipe (the paper's code, llm-jp/llm-jp-sae,
plus the documented extensions: scalar normalisation, AuxK, removal of the decoder-parallel
gradient, lr decay). Written from the recipe, independent of the C code; used to make test
fixtures and as the benchmark peer.

  sae_reference.py fixture OUT.safetensors.gz     # small fixtures for stages/sae_trainer tests
  sae_reference.py bench --d 512 --n 8192 --k 32 --batch 4096 --steps 5 --data X.f32

Run with Debian's /usr/bin/python3 (torch, numpy).
"""
import argparse
import json
import math
import sys
import time

import numpy as np
import torch
from torch import nn

import safetensors_np  # tools/, beside this script


class RefTopKSAE(nn.Module):
    """The paper's TopKSAE: encoder nn.Linear(d, n), decoder nn.Linear(n, d, bias=False), b_dec."""

    def __init__(self, d, n, k):
        super().__init__()
        self.d, self.n, self.k = d, n, k
        self.decoder = nn.Linear(n, d, bias=False)
        self.renorm()
        self.encoder = nn.Linear(d, n)
        self.encoder.weight.data = self.decoder.weight.T.clone()
        self.encoder.bias.data.zero_()
        self.b_dec = nn.Parameter(torch.zeros(d))

    def pre_acts(self, x):
        return torch.relu(self.encoder(x - self.b_dec))

    def forward(self, x):
        pre = self.pre_acts(x)
        top = pre.topk(self.k, dim=-1, sorted=False)
        z = torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
        return self.decoder(z) + self.b_dec, pre, z

    @torch.no_grad()
    def renorm(self):
        eps = torch.finfo(self.decoder.weight.dtype).eps
        self.decoder.weight.data /= self.decoder.weight.data.norm(dim=0, keepdim=True) + eps


@torch.no_grad()
def geometric_median(points, max_iter=100, tol=1e-5):
    guess = points.mean(dim=0)
    for _ in range(max_iter):
        prev = guess
        dist = torch.norm(points - guess, dim=1)
        w = 1 / (dist + 1e-8)
        w /= w.sum()
        guess = (w.unsqueeze(1) * points).sum(dim=0)
        if torch.norm(guess - prev) < tol:
            break
    return guess


def lr_factor(step, warmup, decay_start=0, decay_steps=0):
    f = step / warmup if step < warmup else 1.0
    if decay_steps > 0 and step >= decay_start:
        f *= max(0.0, 1.0 - (step - decay_start) / decay_steps)
    return f


class RefTrainer:
    def __init__(self, sae, lr=1e-3, warmup=1000, k_aux=0, aux_coef=1 / 32, dead_tokens=10_000_000,
                 remove_parallel=False, decay_start=0, decay_steps=0):
        self.sae = sae
        self.opt = torch.optim.Adam(sae.parameters(), lr=lr, eps=6.25e-10)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, warmup, decay_start, decay_steps))
        self.k_aux, self.aux_coef, self.dead_tokens = k_aux, aux_coef, dead_tokens
        self.remove_parallel = remove_parallel
        self.since_fired = torch.zeros(sae.n, dtype=torch.int64)

    def step(self, x):
        sae = self.sae
        dead = self.since_fired >= self.dead_tokens
        x_hat, pre, z = sae(x)
        mse = (x - x_hat).pow(2).sum(dim=-1).mean()
        loss = mse
        aux = torch.zeros(())
        num_dead = int(dead.sum())
        if self.k_aux and num_dead > 0:
            k_aux = min(self.k_aux, num_dead)
            scale = min(num_dead / self.k_aux, 1.0)
            masked = torch.where(dead[None], pre, torch.full_like(pre, -math.inf))
            top = masked.topk(k_aux, dim=-1, sorted=False)
            za = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.clamp(min=0))
            e_hat = sae.decoder(za)
            resid = (x - x_hat).detach()
            aux = scale * (e_hat - resid).pow(2).sum(dim=-1).mean()
            loss = mse + self.aux_coef * aux
        self.opt.zero_grad()
        loss.backward()
        if self.remove_parallel:
            w, g = sae.decoder.weight.data, sae.decoder.weight.grad
            g -= (g * w).sum(dim=0, keepdim=True) * w
        grads = {name: p.grad.detach().clone() for name, p in sae.named_parameters()}
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        sae.renorm()
        fired = (z > 0).any(dim=0)
        self.since_fired = torch.where(fired, torch.zeros_like(self.since_fired),
                                       self.since_fired + x.shape[0])
        return float(loss), float(mse), float(aux), lr, grads


def normalize(x, mode, scale=1.0):
    if mode == "unit":
        return x / x.norm(dim=-1, keepdim=True)
    if mode == "scalar":
        return x * scale
    return x


def synthetic(rows, d, seed):
    """Activations with structure: sparse sums of a hidden dictionary, an offset, noise."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(4 * d * 4, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    offset = torch.randn(d, generator=g) * 2.0
    x = offset.repeat(rows, 1) + 0.05 * torch.randn(rows, d, generator=g)
    for _ in range(4):
        which = torch.randint(0, atoms.shape[0], (rows,), generator=g)
        coef = torch.empty(rows).exponential_(generator=g) * 2.0
        x += coef[:, None] * atoms[which]
    return x


def make_case(out, prefix, pool, d, n, k, batch, norm, steps, warmup, seed, with_step1, **trainer_kw):
    """One fixture case: initial weights, loss curve, and optionally the first step's gradients
    and parameters."""
    torch.manual_seed(seed)
    sae = RefTopKSAE(d, n, k)
    nb = pool.shape[0] // batch
    first = pool[:batch]
    scale = 1.0
    if norm == "scalar":
        scale = float(math.sqrt(d) / first.norm(dim=-1).mean())
    x0 = normalize(first, norm, scale)
    sae.b_dec.data = geometric_median(x0)
    # The recipe makes W_enc = W_dec (as [n, d]) and b_enc = 0 at init: store the decoder only.
    assert torch.equal(sae.encoder.weight, sae.decoder.weight.T) and not sae.encoder.bias.any()
    out[prefix + "init.W_dec"] = sae.decoder.weight.detach().T.contiguous().clone()  # [n, d]
    out[prefix + "init.b_dec"] = sae.b_dec.detach().clone()
    tr = RefTrainer(sae, warmup=warmup, **trainer_kw)
    losses = []
    for s in range(steps):
        xb = normalize(pool[(s % nb) * batch:(s % nb + 1) * batch], norm, scale)
        loss, mse, aux, lr, grads = tr.step(xb)
        losses.append([loss, mse, aux])
        if s == 0 and with_step1:
            out[prefix + "grad.W_enc"] = grads["encoder.weight"]
            out[prefix + "grad.b_enc"] = grads["encoder.bias"]
            out[prefix + "grad.W_dec"] = grads["decoder.weight"].T.contiguous()
            out[prefix + "grad.b_dec"] = grads["b_dec"]
            out[prefix + "step1.W_enc"] = sae.encoder.weight.detach().clone()
            out[prefix + "step1.b_enc"] = sae.encoder.bias.detach().clone()
            out[prefix + "step1.W_dec"] = sae.decoder.weight.detach().T.contiguous().clone()
            out[prefix + "step1.b_dec"] = sae.b_dec.detach().clone()
    out[prefix + "losses"] = torch.tensor(losses, dtype=torch.float64)
    cfg = dict(d=d, n=n, k=k, batch=batch, norm=norm, norm_scale=scale, steps=steps, warmup=warmup)
    cfg.update(trainer_kw)
    return cfg


def cmd_fixture(args):
    torch.set_num_threads(1)
    d, n, k, batch = 32, 256, 8, 64
    pool = synthetic(16 * batch, d, seed=1234)
    out = {"pool": pool}
    cases = {
        # The paper's recipe: unit norm, warmup (step 1 uses lr 0, so no warmup for the 1-step case
        # is a separate run below).
        "paper.": make_case(out, "paper.", pool, d, n, k, batch, "unit", 200, 20, seed=1, with_step1=False),
        "nowarm.": make_case(out, "nowarm.", pool, d, n, k, batch, "unit", 1, 0, seed=2, with_step1=True),
        # Every latent dead from the start so AuxK acts on step 1; scalar norm, parallel-gradient
        # removal, lr decay.
        "aux.": make_case(out, "aux.", pool, d, n, k, batch, "scalar", 100, 0, seed=3, with_step1=True, k_aux=16,
                          dead_tokens=0, remove_parallel=True, decay_start=50, decay_steps=100),
        # AuxK kicking in later, once latents go unused for 256 tokens.
        "dead.": make_case(out, "dead.", pool, d, n, k, batch, "none", 120, 10, seed=4, with_step1=False, k_aux=16,
                           dead_tokens=256),
    }
    safetensors_np.write(args.out, {k: v.detach().cpu().numpy() if torch.is_tensor(v) else v for k, v in out.items()},
                         {"cases": json.dumps(cases), "torch": torch.__version__})
    print(f"wrote {args.out}: {len(out)} tensors; cases " + ", ".join(cases))


def cmd_bench(args):
    torch.set_num_threads(args.threads)
    d, n, k, batch = args.d, args.n, args.k, args.batch
    if args.data:
        pool = torch.from_numpy(np.fromfile(args.data, dtype=np.float32).reshape(-1, d))
    else:
        pool = synthetic(batch * 2, d, seed=7)
    torch.manual_seed(0)
    sae = RefTopKSAE(d, n, k)
    nb = pool.shape[0] // batch
    sae.b_dec.data = geometric_median(normalize(pool[:batch], "unit"))
    tr = RefTrainer(sae, warmup=args.warmup)
    tr.step(normalize(pool[:batch], "unit"))  # warm-up step, not timed
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(args.steps):
        b = (s + 1) % nb
        loss, *_ = tr.step(normalize(pool[b * batch:(b + 1) * batch], "unit"))
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"tokens_per_s": args.steps * batch / dt, "tokens_per_cpu_s": args.steps * batch / dc,
                      "steps": args.steps, "seconds": dt,
                      "loss": loss, "d": d, "n": n, "k": k, "batch": batch,
                      "threads": torch.get_num_threads()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixture")
    f.add_argument("out")
    b = sub.add_parser("bench")
    b.add_argument("--d", type=int, default=512)
    b.add_argument("--n", type=int, default=8192)
    b.add_argument("--k", type=int, default=32)
    b.add_argument("--batch", type=int, default=4096)
    b.add_argument("--steps", type=int, default=5)
    b.add_argument("--warmup", type=int, default=1000)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--data", help="raw float32 rows of width d (default: synthetic)")
    args = ap.parse_args()
    {"fixture": cmd_fixture, "bench": cmd_bench}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
