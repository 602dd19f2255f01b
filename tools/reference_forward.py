#!/usr/bin/python3
"""Reference forward pass of a suite checkpoint (HF Llama semantics, float32
compute from the stored bf16 weights), for checking the C forward stage.

  # per-token cross-entropy of token-id sequences (one sequence per line,
  # ids separated by spaces, first id normally BOS=1) read from stdin:
  /usr/bin/python3 tools/reference_forward.py data/suite/step-003000 < ids.txt
  # prints per line: the losses of predicting ids[1..n-1] (n-1 numbers)
  # --out DIR also writes loss_{k}.npy [n-1] and hidden_{k}.npy
  # [L+2, n, d] per sequence k (0 = embeddings, 1..L = after layer i,
  # L+1 = after the final RMSNorm)

  # rebuild the committed fixture data/suite/reference/:
  /usr/bin/python3 tools/reference_forward.py data/suite/step-003000 --make-fixture

  # the same with a TopK SAE spliced in: a torch forward hook replaces the
  # hook point's output (resid_post.L = output of layer L, resid_pre.L = its
  # input) by the SAE's reconstruction (input normalisation undone, a BOS
  # at position 0 kept); prints the spliced losses.  --make-sae-fixture
  # copies the SAE (as bf16, paper layout) into FIXTURE_DIR/sae and writes
  # loss_sae.npy (and loss_sae_scalar.npy, the same weights read with a
  # scalar normalisation) for the ids of the fixture.
  /usr/bin/python3 tools/reference_forward.py CKPT --sae SAE_DIR [--sae-hook resid_post.2] < ids.txt
  /usr/bin/python3 tools/reference_forward.py CKPT --sae SAE_DIR --make-sae-fixture
"""
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import argparse
import gzip
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_suite as ls  # noqa: E402


@torch.no_grad()
def forward(model, ids):
    """ids: list of ints -> (loss [n-1] float32, hidden [L+2, n, d] float32,
    argmax [n-1] int32: the predicted next token at positions 0..n-2)."""
    x = torch.tensor([ids], dtype=torch.int64)
    logits, hs = model(x, want_hidden=True)
    loss = F.cross_entropy(logits[0, :-1], x[0, 1:], reduction="none")
    hidden = torch.stack([h[0] for h in hs]).float()
    return (loss.numpy().astype(np.float32), hidden.numpy().astype(np.float32),
            logits[0, :-1].argmax(-1).numpy().astype(np.int32))


class TopKSAE:
    """The paper's TopK SAE (llm-jp-sae layout: encoder.weight [n, d],
    encoder.bias [n], decoder.weight [d, n], b_dec [d]) with saeflow's input
    normalisation (config saeflow_normalize: unit (default), scalar, none)."""

    def __init__(self, sae_dir):
        with open(os.path.join(sae_dir, "config.json")) as f:
            self.cfg = json.load(f)
        w = ls.load_safetensors(os.path.join(sae_dir, "model.safetensors"))
        self.W_enc, self.b_enc = w["encoder.weight"], w["encoder.bias"]
        self.W_dec, self.b_dec = w["decoder.weight"], w["b_dec"]
        self.k = int(self.cfg["k"])
        self.norm = self.cfg.get("saeflow_normalize", "unit")
        self.scale = float(self.cfg.get("saeflow_norm_scale", 1.0))
        self.hook = self.cfg.get("saeflow_training", {}).get("hook", "")

    def factor(self, x):
        """per-row factor the input is multiplied by, [rows, 1]"""
        if self.norm == "unit":
            n = x.norm(dim=-1, keepdim=True)
            return torch.where(n > 0, 1.0 / n, torch.ones_like(n))
        s = self.scale if self.norm == "scalar" else 1.0
        return torch.full(x.shape[:-1] + (1,), s)

    def reconstruct(self, x):
        """raw x [rows, d] -> (x_hat [rows, d] in the raw space, the margin
        between the k-th and (k+1)-th pre-activation of each row)"""
        f = self.factor(x)
        pre = F.relu((x * f - self.b_dec) @ self.W_enc.T + self.b_enc)
        top = pre.topk(self.k + 1, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top.indices[:, :self.k], top.values[:, :self.k])
        xhat = z @ self.W_dec.T + self.b_dec
        return xhat / f, top.values[:, self.k - 1] - top.values[:, self.k]


def splice_hook(model, sae, hook, ids):
    """Registers the torch hook that replaces `hook` (resid_post.L or
    resid_pre.L) by the SAE's reconstruction; returns (handle, margins list)."""
    kind, layer = hook.split(".")
    layer = model.model.layers[int(layer)]
    margins = []

    def replace(h):
        x = h[0]
        xhat, margin = sae.reconstruct(x)
        if ids[0] == 1:                      # BOS keeps its own activations
            xhat[0] = x[0]
            margin[0] = float("inf")
        margins.append(margin)
        return xhat[None]

    if kind == "resid_post":
        handle = layer.register_forward_hook(lambda mod, inp, out: replace(out))
    elif kind == "resid_pre":
        handle = layer.register_forward_pre_hook(lambda mod, inp: (replace(inp[0]),) + tuple(inp[1:]))
    else:
        raise SystemExit(f"--sae-hook {hook}: only resid_pre.L and resid_post.L here")
    return handle, margins


@torch.no_grad()
def spliced_loss(model, sae, hook, ids):
    """per-token loss [n-1] with the SAE spliced at hook, and the smallest
    top-k margin over the spliced positions"""
    handle, margins = splice_hook(model, sae, hook, ids)
    try:
        loss, _, _ = forward(model, ids)
    finally:
        handle.remove()
    return loss, float(torch.cat(margins).min())


def make_sae_fixture(model, sae_dir, hook, out):
    """The SAE as bf16 in out/sae (paper layout), and the spliced losses of
    out/ids.npy with it (unit normalisation, as trained) and with the same
    weights read under a scalar normalisation (loss_sae_scalar.npy)."""
    sae_out = os.path.join(out, "sae")
    os.makedirs(sae_out, exist_ok=True)
    src = TopKSAE(sae_dir)
    tensors = {"encoder.weight": src.W_enc, "encoder.bias": src.b_enc,
               "decoder.weight": src.W_dec, "b_dec": src.b_dec}
    ls.save_safetensors(os.path.join(sae_out, "model.safetensors"), tensors, "BF16")
    cfg = {"d_in": int(src.W_enc.shape[1]), "num_latents": int(src.W_enc.shape[0]), "k": src.k,
           "saeflow_normalize": src.norm, "saeflow_training": {"hook": hook}}
    with open(os.path.join(sae_out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    sae = TopKSAE(sae_out)                   # the bf16 weights, as the C side reads them
    ids = np.load(os.path.join(out, "ids.npy"))
    clean = np.load(os.path.join(out, "loss.npy"))
    meta = {"hook": hook, "source": os.path.basename(os.path.normpath(sae_dir))}
    for norm, name in (("unit", "loss_sae.npy"), ("scalar", "loss_sae_scalar.npy")):
        sae.norm, sae.scale = norm, 0.125
        got = [spliced_loss(model, sae, hook, list(map(int, s))) for s in ids]
        loss = np.stack([g[0] for g in got])
        np.save(os.path.join(out, name), loss)
        meta[norm] = {"file": name, "scale": sae.scale if norm == "scalar" else None,
                      "mean_loss": float(clean.mean()), "mean_loss_sae": float(loss.mean()),
                      "min_topk_margin": min(g[1] for g in got)}
        print(f"{norm}: mean loss {clean.mean():.4f} -> spliced {loss.mean():.4f}, "
              f"smallest top-k margin {meta[norm]['min_topk_margin']:.2e}")
    with open(os.path.join(sae_out, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


@torch.no_grad()
def greedy(model, ids, n):
    ids = list(ids)
    for _ in range(n):
        logits = model(torch.tensor([ids], dtype=torch.int64))
        ids.append(int(logits[0, -1].argmax()))
    return ids


def make_fixture(model, ckdir, out, corpus, tok_path):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=tok_path)
    os.makedirs(out, exist_ok=True)
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        docs = [json.loads(l) for l in f]
    docs = sorted((d for d in docs if ls.split_of(d["id"]) == "valid"),
                  key=lambda d: d["id"])
    chosen = []
    for lang in ("en", "ja"):
        n = 0
        for d in docs:
            if d["lang"] != lang:
                continue
            seqs = ls.pack_document(sp.encode(d["text"]), 1, 64)
            if seqs:
                chosen.append((d["id"], lang, seqs[0]))
                n += 1
            if n == 2:
                break
    ids = np.array([c[2] for c in chosen], dtype=np.int32)
    losses, hiddens, argmaxes = zip(*(forward(model, list(map(int, s))) for s in ids))
    loss = np.stack(losses)
    hidden = np.stack(hiddens, axis=1)       # [L+2, 4, 65, d]
    L = hidden.shape[0] - 2
    np.save(os.path.join(out, "ids.npy"), ids)
    np.save(os.path.join(out, "loss.npy"), loss)
    np.save(os.path.join(out, "argmax.npy"), np.stack(argmaxes))
    np.save(os.path.join(out, "embed.npy"), hidden[0])
    for i in range(L):
        np.save(os.path.join(out, "layer_%02d.npy" % i), hidden[i + 1])
    np.save(os.path.join(out, "final_norm.npy"), hidden[L + 1])
    with open(os.path.join(out, "ids.txt"), "w") as f:
        for s in ids:
            f.write(" ".join(map(str, s)) + "\n")
    meta = {"checkpoint": ckdir, "sequences": [
        {"doc_id": c[0], "lang": c[1], "text": sp.decode(list(map(int, c[2][1:]))),
         "mean_loss": round(float(l.mean()), 4)} for c, l in zip(chosen, loss)]}
    prompts = ["The apt-get command", "Debian is a free operating system",
               "To install a package, run",
               "パッケージをインストールするには", "Debian は", "このコマンドは"]
    gens = []
    for p in prompts:
        pid = [1] + sp.encode(p)
        full = greedy(model, pid, 20)
        gens.append({"prompt": p, "prompt_ids": pid, "ids": full,
                     "continuation_ids": full[len(pid):],
                     "continuation": sp.decode(full[len(pid):]),
                     "text": sp.decode(full[1:])})
    meta["greedy"] = gens
    with open(os.path.join(out, "fixture.json"), "w") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(out, "generations.json"), "w") as f:
        json.dump({"checkpoint": ckdir, "max_new_tokens": 20, "decoding": "greedy",
                   "generations": gens}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for g in gens:
        print(repr(g["prompt"]), "->", repr(g["continuation"]))
    print("fixture written to", out, "mean loss per sequence",
          [round(float(l.mean()), 3) for l in loss])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--out", help="write loss_k.npy / hidden_k.npy here")
    ap.add_argument("--make-fixture", action="store_true")
    ap.add_argument("--sae", help="splice this TopK SAE (paper layout) into the forward")
    ap.add_argument("--sae-hook", help="hook point it replaces (default: its recorded hook)")
    ap.add_argument("--make-sae-fixture", action="store_true")
    ap.add_argument("--fixture-dir", default="data/suite/reference")
    ap.add_argument("--corpus", default="data/corpus/debian-docs.jsonl.gz")
    ap.add_argument("--tokenizer", default="data/suite/tokenizer.model")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = ls.load_checkpoint(args.checkpoint)
    if args.make_fixture:
        make_fixture(model, args.checkpoint, args.fixture_dir, args.corpus, args.tokenizer)
        return
    sae = TopKSAE(args.sae) if args.sae else None
    hook = args.sae_hook or (sae.hook if sae else None)
    if sae and not hook:
        raise SystemExit(f"{args.sae} records no hook: give --sae-hook")
    if args.make_sae_fixture:
        make_sae_fixture(model, args.sae, hook, args.fixture_dir)
        return
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    for k, line in enumerate(sys.stdin):
        ids = [int(t) for t in line.split()]
        if len(ids) < 2:
            print()
            continue
        if sae:
            loss, _ = spliced_loss(model, sae, hook, ids)
            print(" ".join("%.6f" % v for v in loss))
            continue
        loss, hidden, _ = forward(model, ids)
        print(" ".join("%.6f" % v for v in loss))
        if args.out:
            np.save(os.path.join(args.out, "loss_%d.npy" % k), loss)
            np.save(os.path.join(args.out, "hidden_%d.npy" % k), hidden)


if __name__ == "__main__":
    main()
