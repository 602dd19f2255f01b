#!/usr/bin/python3
"""STEPS training steps of the lm_trainer stage (200 by default; meson runs 40 in the default suite,
200 in the slow one) track tools/train_suite.py's PyTorch training on the same data order within 1%.

The suite's architecture (train_suite.MODEL_CONFIG) is initialised by PyTorch (llama_suite's
init_weights, seed 0) and saved as an F32 step-0 checkpoint that both sides start from. Token
windows: the bundled corpus's train documents, tokenised with the suite's SentencePiece model and
packed as train_suite packs them (BOS + 64 tokens), in a seeded random order; a held-out set from the
valid split. The stage gets them through zmq_in as tokens messages (core/MESSAGES.md) and trains with
batch 8 x accum 2; PyTorch trains with train_suite's loss, optimizer groups (AdamW 0.9/0.95, weight
decay 0.1 on matrices), clipping (1.0) and lr_at schedule on batches of the same 16 windows in the
same order. Checked: step 1's loss (identical weights) within 1e-4, the loss curve (means over 10-step
windows) within 1% and every step within 2%, the
first 20 steps within 1e-4 (a systematic difference shows there, before rounding differences grow),
the final held-out loss within 1%, and the saved F32 checkpoint's weights as a whole near PyTorch's
(the norm of the difference over the weights' norm: < 0.25 after 200 steps, measured 0.13, since two
float32 trainings drift apart; < 2e-3 for runs of at most 50 steps, measured 8.5e-4 after 40).

  test_parity.py SAEFLOW ROOT [STEPS]
"""
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

ENV = dict(os.environ)  # before train_suite's import sets its thread and CPU defaults
import numpy as np  # noqa: E402

try:
    import msgpack
    import msgpack_numpy
    import zmq
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

SAEFLOW, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
STEPS = int(sys.argv[3]) if len(sys.argv) > 3 else 200
sys.path.insert(0, os.path.join(ROOT, "tools"))
import torch  # noqa: E402
import llama_suite as ls  # noqa: E402
import train_suite as ts  # noqa: E402

BATCH, ACCUM, LR, WARMUP, NVALID = 8, 2, 2e-3, 20, 32
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def windows(n_train, n_valid):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(ROOT, "data/suite/tokenizer.model"))
    out = {"train": [], "valid": []}
    with gzip.open(os.path.join(ROOT, "data/corpus/debian-docs.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            split = ls.split_of(d["id"])
            want = n_train if split == "train" else n_valid if split == "valid" else 0
            if split in out and len(out[split]) < want * 2:
                out[split] += ls.pack_document(sp.encode(d["text"]), ts.BOS, 64)
            if len(out["train"]) >= 2 * n_train and len(out["valid"]) >= n_valid:
                break
    rng = np.random.default_rng(0)
    train = np.array(out["train"], np.int32)
    train = train[rng.permutation(len(train))[:n_train]]
    return train, np.array(out["valid"][:n_valid], np.int32)


def tokens_msg(arr, split):
    b = len(arr)
    return {"tokens": arr, "doc_id": np.arange(b, dtype=np.int64), "pos": np.zeros(b, np.int32),
            "label": ["en"] * b, "split": split}


def run_stage(tmp, init, train, valid):
    endpoint = "ipc://" + os.path.join(tmp, "feed.ipc")
    out = os.path.join(tmp, "out")
    flow = os.path.join(tmp, "p.flow")
    with open(flow, "w") as f:
        f.write(f"""stage feed = zmq_in {{
    endpoint = "{endpoint}"
}}
stage lm = lm_trainer {{
    input = feed
    init_from = "{init}"
    out_dir = "{out}"
    steps = {STEPS}
    batch = {BATCH}
    accum = {ACCUM}
    lr = {LR}
    warmup = {WARMUP}
    schedule = cosine
    min_lr_ratio = 0.1
    save_steps = "0,final"
    dtype = f32
    valid_seqs = {NVALID}
    valid_split = valid
}}
""")
    p = subprocess.Popen([SAEFLOW, "run", flow, "--no-progress"], stderr=subprocess.PIPE, text=True, env=ENV)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoint)
    push.send(msgpack.packb(tokens_msg(valid, "valid"), default=msgpack_numpy.encode, use_bin_type=True))
    for i in range(0, len(train), 32):
        push.send(msgpack.packb(tokens_msg(train[i:i + 32], "train"), default=msgpack_numpy.encode, use_bin_type=True))
    push.send(b"")
    t0 = time.time()
    err = p.communicate(timeout=1800)[1]
    push.close(0)
    ctx.term()
    check(p.returncode == 0, "the stage trained" + ("" if p.returncode == 0 else ":\n" + err[-3000:]))
    print(f"     lm_trainer: {time.time() - t0:.1f} s", flush=True)
    rows = [l.split(",") for l in open(os.path.join(out, "loss.csv")).read().split("\n")[1:] if l]
    return out, np.array([float(r[1]) for r in rows]), json.load(open(os.path.join(out, "checkpoints.json")))


def run_torch(init, train, valid):
    torch.set_num_threads(1)
    model = ls.load_checkpoint(init)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8)
    losses = []
    t0 = time.time()
    n = BATCH * ACCUM
    for step in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = ts.lr_at(step, STEPS, LR, WARMUP)
        loss = ts.lm_loss(model, train[step * n:(step + 1) * n])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    print(f"     PyTorch: {time.time() - t0:.1f} s", flush=True)
    with torch.no_grad():
        vloss = float(ts.lm_loss(model, valid))
    return model, np.array(losses), vloss


def main():
    tmp = tempfile.mkdtemp(prefix="lm_parity_")
    train, valid = windows(STEPS * BATCH * ACCUM, NVALID)
    check(len(train) == STEPS * BATCH * ACCUM and len(valid) == NVALID, f"{len(train)} train, {len(valid)} held-out windows")
    init = os.path.join(tmp, "init")
    model = ls.LlamaForCausalLM(dict(ts.MODEL_CONFIG))
    model.init_weights(0)
    os.makedirs(init)
    ls.save_safetensors(os.path.join(init, "model.safetensors"), model.state_dict(), "F32")
    with open(os.path.join(init, "config.json"), "w") as f:
        json.dump(ls.hf_config(model.config), f)

    out, c_loss, index = run_stage(tmp, init, train, valid)
    ref, t_loss, t_vloss = run_torch(init, train, valid)
    check(len(c_loss) == STEPS, f"loss.csv has {len(c_loss)} steps")
    if len(c_loss) != STEPS:
        sys.exit(1)
    rel = np.abs(c_loss - t_loss) / t_loss
    print(f"     loss: C {c_loss[0]:.4f} -> {c_loss[-1]:.4f}, PyTorch {t_loss[0]:.4f} -> {t_loss[-1]:.4f}; "
          f"largest relative difference {rel.max():.2e} at step {int(rel.argmax()) + 1}", flush=True)
    check(t_loss[-1] < t_loss[0] - 1.0, "the loss fell (the run trained)")
    check(rel[0] < 1e-4, f"step 1 (the same weights): relative difference {rel[0]:.2e} < 1e-4")
    # The curve within 1%: means over 10-step windows (one step's loss can spike where the two float32
    # runs' small differences meet a hard batch: measured up to 1.02% at step 128 under one kernel).
    n10 = STEPS // 10 * 10
    cw, tw = c_loss[:n10].reshape(-1, 10).mean(1), t_loss[:n10].reshape(-1, 10).mean(1)
    win = np.abs(cw - tw) / tw
    check(win.max() < 0.01, f"the loss curve (10-step means) within 1% of PyTorch's (largest {win.max():.2e})")
    check(rel.max() < 0.02, f"every step within 2% of PyTorch's loss (largest {rel.max():.2e})")
    # A systematic difference (optimizer, clipping, schedule, data order) shows from the first steps,
    # before rounding differences have grown: they stay far below the 1% the whole run is allowed.
    check(rel[:20].max() < 1e-4, f"the first 20 steps within 1e-4 (largest {rel[:20].max():.2e})")
    final = index[-1]
    check(final["step"] == STEPS and abs(final["val_loss"] - t_vloss) / t_vloss < 0.01,
          f"held-out loss at step {final['step']}: {final['val_loss']:.4f} vs PyTorch {t_vloss:.4f}")
    check(abs(final["train_loss"] - c_loss.mean()) < 1e-6,
          f"train_loss {final['train_loss']:.4f} is the mean of the steps' losses since step 0")
    got = ls.load_safetensors(os.path.join(out, f"step-{STEPS:06d}", "model.safetensors"))
    sd = ref.state_dict()
    # Two float32 trainings drift apart (Adam amplifies rounding in rarely-updated embedding rows;
    # measured 0.13 after 200 steps while the losses stay within 0.75%; 8.5e-4 after 40), so this
    # only bounds the weights as a whole: the norm of the difference relative to the weights' norm.
    diff = math.sqrt(sum(float(((got[k] - sd[k]).double() ** 2).sum()) for k in sd))
    norm = math.sqrt(sum(float((sd[k].double() ** 2).sum()) for k in sd))
    check(sorted(got) == sorted(sd) and diff / norm < (0.25 if STEPS > 50 else 2e-3),
          f"final weights: |C - PyTorch| / |PyTorch| = {diff / norm:.2e} over every tensor")
    if failures:
        print(f"kept {tmp} for inspection", flush=True)
    else:
        shutil.rmtree(tmp)
    sys.exit(1 if failures else 0)


main()
