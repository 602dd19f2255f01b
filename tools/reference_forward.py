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
    ap.add_argument("--fixture-dir", default="data/suite/reference")
    ap.add_argument("--corpus", default="data/corpus/debian-docs.jsonl.gz")
    ap.add_argument("--tokenizer", default="data/suite/tokenizer.model")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = ls.load_checkpoint(args.checkpoint)
    if args.make_fixture:
        make_fixture(model, args.checkpoint, args.fixture_dir, args.corpus, args.tokenizer)
        return
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    for k, line in enumerate(sys.stdin):
        ids = [int(t) for t in line.split()]
        if len(ids) < 2:
            print()
            continue
        loss, hidden, _ = forward(model, ids)
        print(" ".join("%.6f" % v for v in loss))
        if args.out:
            np.save(os.path.join(args.out, "loss_%d.npy" % k), loss)
            np.save(os.path.join(args.out, "hidden_%d.npy" % k), hidden)


if __name__ == "__main__":
    main()
