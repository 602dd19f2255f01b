#!/usr/bin/python3
"""Train the saeflow checkpoint suite: a SentencePiece Unigram tokenizer and a
small Llama-architecture causal LM, saved in Hugging Face format at
log-spaced steps under data/suite/.

  /usr/bin/python3 tools/train_suite.py            # everything
  /usr/bin/python3 tools/train_suite.py --bench 20 # time 20 steps and exit

Inputs: data/corpus/debian-docs.jsonl.gz (the committed subset).
Scratch: data/build/suite/ (gitignored).  Needs Debian packages
python3-torch, python3-numpy, python3-sentencepiece, sentencepiece.
"""
import os
# OpenBLAS 0.3.21 takes this CPU for a Prescott: name its real core, where it is an AVX-512 one
with open("/proc/cpuinfo") as _f:
    if " avx512f" in _f.read():
        os.environ.setdefault("OPENBLAS_CORETYPE", "SKYLAKEX")
# one BLAS/OpenMP thread unless asked otherwise: the machine is shared
import sys
_threads = "1"
for _i, _a in enumerate(sys.argv):
    if _a == "--threads" and _i + 1 < len(sys.argv):
        _threads = sys.argv[_i + 1]
    elif _a.startswith("--threads="):
        _threads = _a.split("=", 1)[1]
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, _threads)
import argparse
import gzip
import json
import math
import shutil
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_suite as ls  # noqa: E402

UNK, BOS, EOS = 0, 1, 2

MODEL_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": BOS,
    "eos_token_id": EOS,
    "hidden_act": "silu",
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 5,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 48,
    "max_position_embeddings": 128,
    "initializer_range": 0.02,
    "mlp_bias": False,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-5,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 8000,
}

SPM_ARGS = [
    "--model_type=unigram", "--vocab_size=8000",
    "--character_coverage=0.9995", "--byte_fallback=true",
    "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1",
    "--unk_piece=<unk>", "--bos_piece=<s>", "--eos_piece=</s>",
    "--normalization_rule_name=identity", "--remove_extra_whitespaces=false",
    "--add_dummy_prefix=true", "--split_digits=true",
    "--allow_whitespace_only_pieces=true", "--max_sentence_length=16384",
    "--input_sentence_size=3000000", "--shuffle_input_sentence=true",
    "--random_seed=1234", "--num_threads=2",
]


def read_corpus(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(l) for l in f]

# ------------------------------------------------------------ tokenizer


def train_tokenizer(docs, build, suite):
    inp = os.path.join(build, "spm_input.txt")
    with open(inp, "w", encoding="utf-8") as f:
        for d in docs:
            if ls.split_of(d["id"]) != "train":
                continue
            for line in d["text"].split("\n"):
                if line.strip():
                    f.write(line + "\n")
    prefix = os.path.join(build, "spm")
    cmd = ["spm_train", "--input=" + inp, "--model_prefix=" + prefix] + SPM_ARGS
    print("+", " ".join(cmd), flush=True)
    with open(os.path.join(build, "spm_train.log"), "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    shutil.copyfile(prefix + ".model", os.path.join(suite, "tokenizer.model"))
    write_hf_tokenizer(os.path.join(suite, "tokenizer.model"),
                       os.path.join(suite, "tokenizer.json"))


def write_hf_tokenizer(model_path, out_path):
    """tokenizer.json for the `tokenizers` library, equivalent to the
    SentencePiece model: Unigram(vocab=[[piece, score]], unk_id,
    byte_fallback), normalizer Prepend("▁") + Replace(" ", "▁") (the model
    uses identity normalization and add_dummy_prefix, like Llama's), no
    pre-tokenizer (SentencePiece runs Viterbi over the whole string), the
    Llama decoder chain and a TemplateProcessing post-processor adding <s>."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=model_path)
    vocab = []
    added = []
    for i in range(sp.get_piece_size()):
        piece, score = sp.id_to_piece(i), sp.get_score(i)
        if sp.is_control(i) or sp.is_unknown(i):
            score = 0.0
            added.append({"id": i, "content": piece, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True})
        vocab.append([piece, float(score)])
    bos = sp.id_to_piece(BOS)
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        ]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [BOS], "tokens": [bos]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]},
        "model": {"type": "Unigram", "unk_id": UNK, "vocab": vocab,
                  "byte_fallback": True},
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
        f.write("\n")

# ----------------------------------------------------------------- data


def encode_splits(docs, suite, build):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(suite, "tokenizer.model"))
    out = {}
    for split in ("train", "valid", "test"):
        seqs, langs = [], []
        sel = [d for d in docs if ls.split_of(d["id"]) == split]
        ids = sp.encode([d["text"] for d in sel])
        ntok = {"en": 0, "ja": 0}
        for d, t in zip(sel, ids):
            ntok[d["lang"]] += len(t)
            for s in ls.pack_document(t, BOS, 64):
                seqs.append(s)
                langs.append(0 if d["lang"] == "en" else 1)
        arr = np.array(seqs, dtype=np.int32).reshape(-1, 65)
        out[split] = (arr, np.array(langs, dtype=np.int8))
        print("  %-5s %4d docs, tokens en %8d ja %8d, %6d sequences of 65"
              % (split, len(sel), ntok["en"], ntok["ja"], len(arr)), flush=True)
    return out


def unigram_entropy(train):
    cnt = np.bincount(train[:, 1:].ravel(), minlength=8000).astype(np.float64)
    p = cnt[cnt > 0] / cnt.sum()
    return float(-(p * np.log(p)).sum())

# ---------------------------------------------------------------- train


def lm_loss(model, batch):
    x = torch.from_numpy(batch.astype(np.int64))
    logits = model(x[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate(model, arr, langs, bs=64):
    """mean per-token loss overall and per language."""
    model.eval()
    tot = {"all": [0.0, 0], "en": [0.0, 0], "ja": [0.0, 0]}
    for i in range(0, len(arr), bs):
        b = arr[i:i + bs]
        x = torch.from_numpy(b.astype(np.int64))
        logits = model(x[:, :-1])
        l = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                            x[:, 1:].reshape(-1), reduction="none").view(len(b), -1)
        per = l.sum(1).numpy()
        for j, lg in enumerate(langs[i:i + bs]):
            k = "en" if lg == 0 else "ja"
            tot[k][0] += per[j]
            tot[k][1] += l.shape[1]
            tot["all"][0] += per[j]
            tot["all"][1] += l.shape[1]
    model.train()
    return {k: v[0] / max(1, v[1]) for k, v in tot.items()}


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def bf16_roundtrip(model):
    """A copy of the model with weights rounded to bf16 (what is shipped)."""
    m = ls.LlamaForCausalLM(model.config)
    m.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    m.eval()
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus/debian-docs.jsonl.gz")
    ap.add_argument("--suite", default="data/suite")
    ap.add_argument("--build", default="data/build/suite")
    ap.add_argument("--steps", type=int, default=1500, help="training steps (data/suite was made with 1500)")
    ap.add_argument("--checkpoints", default="0,10,100,1000,final")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-seqs", type=int, default=512)
    ap.add_argument("--bench", type=int, default=0, help="time N steps, exit")
    ap.add_argument("--skip-tokenizer", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.suite, exist_ok=True)
    os.makedirs(args.build, exist_ok=True)
    t0 = time.time()
    docs = read_corpus(args.corpus)
    if not args.skip_tokenizer:
        train_tokenizer(docs, args.build, args.suite)
        print("tokenizer: %.0f s" % (time.time() - t0), flush=True)
    data = encode_splits(docs, args.suite, args.build)
    train, _ = data["train"]
    valid, vlang = data["valid"]
    # fixed evaluation subset: evenly spaced valid sequences
    idx = np.linspace(0, len(valid) - 1, min(args.eval_seqs, len(valid))).astype(int)
    ev, evl = valid[idx], vlang[idx]
    h1 = unigram_entropy(train)
    print("unigram entropy of train targets: %.3f nats" % h1, flush=True)

    cfg = dict(MODEL_CONFIG)
    model = ls.LlamaForCausalLM(cfg)
    model.init_weights(args.seed)
    nparam = ls.param_count(model)
    print("model: %d parameters (%.2f MB bf16)" % (nparam, nparam * 2 / 1e6), flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = np.random.default_rng(args.seed)
    steps = args.steps
    ck_steps = sorted({steps if s == "final" else int(s)
                       for s in args.checkpoints.split(",")})

    if args.bench:
        t = time.time()
        for step in range(args.bench):
            b = train[rng.integers(0, len(train), args.batch)]
            loss = lm_loss(model, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step == 1:
                t = time.time()
        dt = (time.time() - t) / max(1, args.bench - 2)
        print("bench: %.3f s/step, %.0f tokens/s, loss %.3f"
              % (dt, args.batch * 64 / dt, loss.item()))
        t = time.time()
        r = evaluate(model, ev[:256], evl[:256])
        print("eval 256 seqs: %.1f s" % (time.time() - t), r)
        return

    records = []
    order = np.concatenate([rng.permutation(len(train)) for _ in range(
        1 + steps * args.batch // len(train))])
    t_train = time.time()
    ema = None
    for step in range(steps + 1):
        if step in ck_steps:
            name = "step-%06d" % step
            m16 = bf16_roundtrip(model)
            ls.save_checkpoint(m16, os.path.join(args.suite, name))
            ev_loss = evaluate(m16, ev, evl)
            rec = {"step": step, "dir": name, "tokens_seen": step * args.batch * 64,
                   "train_loss": None if ema is None else round(ema, 4),
                   "valid_loss": round(ev_loss["all"], 4),
                   "valid_loss_en": round(ev_loss["en"], 4),
                   "valid_loss_ja": round(ev_loss["ja"], 4),
                   "elapsed_s": round(time.time() - t_train, 1)}
            records.append(rec)
            print("checkpoint", json.dumps(rec), flush=True)
        if step == steps:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, args.lr, args.warmup)
        b = train[order[step * args.batch:(step + 1) * args.batch]]
        loss = lm_loss(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = loss.item()
        ema = lv if ema is None or step < 10 else 0.98 * ema + 0.02 * lv
        if step % 50 == 0 or step < 10:
            el = time.time() - t_train
            print("step %5d loss %.4f ema %.4f lr %.2e  %.0f s (%.0f tok/s)"
                  % (step, lv, ema, opt.param_groups[0]["lr"], el,
                     (step + 1) * args.batch * 64 / max(el, 1e-9)), flush=True)
    train_time = time.time() - t_train
    summary = {
        "model_config": cfg,
        "parameters": nparam,
        "tokenizer": {"file": "tokenizer.model", "vocab_size": 8000,
                      "unk_id": UNK, "bos_id": BOS, "eos_id": EOS,
                      "spm_train_args": SPM_ARGS},
        "data": {"corpus": args.corpus, "sequence": "BOS + 64 tokens",
                 "train_sequences": int(len(train)),
                 "valid_sequences": int(len(valid)),
                 "eval_sequences": int(len(ev)),
                 "unigram_entropy_nats": round(h1, 4)},
        "training": {"steps": steps, "batch_sequences": args.batch,
                     "tokens_per_step": args.batch * 64, "optimizer": "AdamW",
                     "lr_peak": args.lr, "warmup": args.warmup,
                     "schedule": "linear warmup, cosine to 10 %",
                     "betas": [0.9, 0.95], "weight_decay": 0.1, "grad_clip": 1.0,
                     "seed": args.seed, "threads": args.threads,
                     "train_seconds": round(train_time, 1),
                     "command": " ".join(["/usr/bin/python3"] + sys.argv)},
        "checkpoints": records,
    }
    with open(os.path.join(args.suite, "checkpoints.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print("done in %.0f s (training %.0f s)" % (time.time() - t0, train_time))


if __name__ == "__main__":
    main()
