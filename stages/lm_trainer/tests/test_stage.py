#!/usr/bin/python3
"""The lm_trainer stage's checkpoints read back and its errors.

Read back: a short run (text_source -> tokenizer -> lm_trainer, a small Llama from a seed) saves
bf16 and f32 checkpoints; each loads strictly into tools/llama_suite.py's PyTorch Llama (every
tensor, no extra one), `saeflow forward DIR --loss` (our forward stage's loader) gives the loss
PyTorch computes on the same windows, the bf16 weights are the training state's f32 weights rounded
to nearest even, and config.json carries the fields HF's LlamaConfig needs. The checkpoint message
reaches a downstream stage (zmq_out -> this script) with model, step, tokens and losses.

Errors (exit != 0, a message saying what to change): an untrainable config (saeflow check names the
line), config and init_from together, save_steps beyond steps, a stream shorter than one batch,
token ids outside the vocabulary, sequences longer than max_position_embeddings, an out_dir holding
a run without resume, a resume with other settings, and a full disk (RLIMIT_FSIZE) at a save: the
checkpoints saved before stay complete, nothing half-written is left, and resume finishes the run.

  test_stage.py SAEFLOW ROOT
"""
import json
import os
import resource
import signal
import shutil
import subprocess
import sys
import tempfile

import numpy as np

try:
    import msgpack
    import zmq
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

SAEFLOW, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
sys.path.insert(0, os.path.join(ROOT, "tools"))
import torch  # noqa: E402
import llama_suite as ls  # noqa: E402
import safetensors_np as st  # noqa: E402

failures = 0
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
          "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
          "vocab_size": 8000, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def flow(tmp, name, lm, docs=60, tail="", seq_len=64):
    path = os.path.join(tmp, name + ".flow")
    body = "\n    ".join(f"{k} = {v}" for k, v in lm.items())
    with open(path, "w") as f:
        f.write(f"""stage docs = text_source {{
    corpora = "{ROOT}/data/corpus/debian-docs.jsonl.gz"
    label_field = lang
    id_field = id
    split_field = split
    split = all
    max_docs = {docs}
}}
stage tok = tokenizer {{
    input = docs
    tokenizer = "{ROOT}/data/suite/tokenizer.model"
    seq_len = {seq_len}
    batch = 8
}}
stage lm = lm_trainer {{
    input = tok
    {body}
}}
{tail}""")
    return path


def run(path, *extra, limit=None):
    def pre():
        if limit:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([SAEFLOW, "run", path, "--no-progress", *extra], capture_output=True, text=True,
                          timeout=600, preexec_fn=pre)


def expect_error(what, p, *words):
    out = p.stderr
    ok = p.returncode != 0 and all(w in out for w in words)
    check(ok, f"{what}: {'refused' if ok else 'expected an error naming ' + repr(words)}"
          + ("" if ok else f" (exit {p.returncode}):\n{out[-1500:]}"))


def base(tmp, out, **kw):
    d = {"config": f'"{tmp}/model"', "out_dir": f'"{out}"', "steps": 4, "batch": 2, "warmup": 1,
         "save_steps": '"0,2,final"', "valid_seqs": 4, "threads": 1}
    d.update(kw)
    return d


def windows_text(arr):
    return "".join(" ".join(map(str, r)) + "\n" for r in arr)


def main():
    tmp = tempfile.mkdtemp(prefix="lm_stage_")
    os.makedirs(os.path.join(tmp, "model"))
    with open(os.path.join(tmp, "model", "config.json"), "w") as f:
        json.dump(CONFIG, f)

    # ---- checkpoints read back, and the message downstream ----
    endpoint = "ipc://" + os.path.join(tmp, "ckpt.ipc")
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(endpoint)
    for dtype in ("bf16", "f32"):
        out = os.path.join(tmp, "run_" + dtype)
        tail = f'stage tap = zmq_out {{\n    input = lm\n    endpoint = "{endpoint}"\n}}\n' if dtype == "bf16" else ""
        p = run(flow(tmp, "read_" + dtype, base(tmp, out, dtype=dtype), tail=tail))
        check(p.returncode == 0, f"{dtype} run" + ("" if p.returncode == 0 else ":\n" + p.stderr[-2000:]))
        if p.returncode:
            continue
        ck = os.path.join(out, "step-000004")
        cfg = json.load(open(os.path.join(ck, "config.json")))
        need = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "num_key_value_heads": 2,
                "head_dim": 16, "tie_word_embeddings": False, "hidden_act": "silu", "vocab_size": 8000,
                "torch_dtype": "bfloat16" if dtype == "bf16" else "float32", "eos_token_id": 2, "rope_scaling": None}
        check(all(cfg.get(k) == v for k, v in need.items()) and cfg["rms_norm_eps"] == 1e-5,
              f"{dtype}: config.json has HF's LlamaConfig fields ({ {k: cfg.get(k) for k in need if cfg.get(k) != need[k]} })")
        tensors, meta = st.read(os.path.join(ck, "model.safetensors"))
        check(meta.get("format") == "pt" and meta.get("step") == "4" and
              all(t == ("BF16" if dtype == "bf16" else "F32") for t, _ in tensors.values()),
              f"{dtype}: tensors stored as {dtype}, metadata format pt, step 4")
        state, smeta = st.read(os.path.join(out, "train_state.safetensors"))
        check(smeta["step"] == "4", "the training state is at the last step")
        worst = 0
        for name, (t, a) in tensors.items():
            w = state[name][1]
            want = torch.from_numpy(w.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16) \
                if dtype == "bf16" else w
            worst += int(not np.array_equal(a, want))
        check(worst == 0 and len(tensors) * 3 == len(state),
              f"{dtype}: every weight is the state's f32 weight{' rounded to bf16 as torch rounds' if dtype == 'bf16' else ''}")
        model = ls.load_checkpoint(ck)  # strict: every tensor, nothing extra
        rng = np.random.default_rng(1)
        ids = rng.integers(3, 8000, size=(6, 33)).astype(np.int64)
        ids[:, 0] = 1
        with torch.no_grad():
            logits = model(torch.from_numpy(ids[:, :-1]))
            ref = float(torch.nn.functional.cross_entropy(logits.reshape(-1, 8000), torch.from_numpy(ids[:, 1:]).reshape(-1)))
        f = subprocess.run([SAEFLOW, "forward", ck, "--loss"], input=windows_text(ids), capture_output=True, text=True)
        got = [float(w) for w in f.stdout.replace("=", " ").split() if w.replace(".", "").replace("-", "").isdigit()]
        check(f.returncode == 0 and got and abs(got[0] - ref) < 1e-4 * ref,
              f"{dtype}: saeflow forward --loss {got[:1]} = PyTorch's {ref:.6f} on the checkpoint ({f.stderr[-300:]})")
        if dtype == "bf16":
            msgs = []
            while pull.poll(5000):
                m = pull.recv()
                if not m:
                    break
                msgs.append(msgpack.unpackb(m, raw=False))
            check([m["step"] for m in msgs] == [0, 2, 4] and msgs[-1]["path"] == ck and msgs[-1]["tokens_seen"] == 4 * 2 * 64
                  and msgs[0]["train_loss"] != msgs[0]["train_loss"] and msgs[-1]["train_loss"] > 0
                  and msgs[-1]["val_loss"] > 0 and msgs[-1]["val_seqs"] == 4
                  and msgs[-1]["checkpoint"] == "step-000004" and msgs[-1]["dtype"] == "bf16",
                  f"checkpoint messages downstream: {[(m['step'], m.get('train_loss'), m.get('val_loss')) for m in msgs]}")
    pull.close(0)
    ctx.term()

    # ---- errors ----
    bad = os.path.join(tmp, "bad")
    os.makedirs(bad)
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump(dict(CONFIG, attention_bias=True), f)
    path = flow(tmp, "untrainable", base(tmp, os.path.join(tmp, "x1"), config=f'"{bad}"'))
    c = subprocess.run([SAEFLOW, "check", path], capture_output=True, text=True)
    expect_error("untrainable config (saeflow check)", c, "parameter 'config'", "bias")
    check(f"{path}:" in c.stderr, "the finding names the pipeline file and line")
    expect_error("config and init_from together",
                 run(flow(tmp, "both", base(tmp, os.path.join(tmp, "x2"), init_from=f'"{ROOT}/data/suite/step-000000"'))),
                 "exactly one of config")
    expect_error("save_steps beyond steps", run(flow(tmp, "saves", base(tmp, os.path.join(tmp, "x3"), save_steps='"0,9"'))),
                 "save_steps", "beyond steps")
    expect_error("a stream shorter than one batch",
                 run(flow(tmp, "short", base(tmp, os.path.join(tmp, "x4"), batch=4096, valid_seqs=0), docs=5)),
                 "fewer than one step", "batch")
    small = os.path.join(tmp, "small_vocab")
    os.makedirs(small)
    with open(os.path.join(small, "config.json"), "w") as f:
        json.dump(dict(CONFIG, vocab_size=100), f)
    expect_error("token ids beyond the vocabulary",
                 run(flow(tmp, "vocab", base(tmp, os.path.join(tmp, "x5"), config=f'"{small}"'))), "vocab")
    expect_error("sequences longer than max_position_embeddings",
                 run(flow(tmp, "long", base(tmp, os.path.join(tmp, "x6")), seq_len=200)), "max_position_embeddings")
    out = os.path.join(tmp, "run_bf16")
    expect_error("an out_dir holding a run, without resume", run(flow(tmp, "again", base(tmp, out))), "resume = true")
    expect_error("resume with other settings",
                 run(flow(tmp, "other", base(tmp, out, lr=0.01, resume="true"))), "other settings", "lr=0.01")

    # ---- a full disk at a save ----
    full = os.path.join(tmp, "full")
    path = flow(tmp, "full", base(tmp, full, steps=6, save_steps='"0,2,4,final"', state_every=0, dtype="f32",
                                  resume="${resume}"))
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write("set resume = false\n" + text)
    sizes = os.path.getsize(os.path.join(tmp, "run_f32", "step-000004", "model.safetensors"))
    state = os.path.getsize(os.path.join(tmp, "run_f32", "train_state.safetensors"))
    p = run(path, limit=state + 4096)  # the state fits, checkpoints fit; loss.csv too
    check(p.returncode == 0, "fits under the limit")
    full2 = os.path.join(tmp, "full2")
    path2 = path.replace("full.flow", "full2.flow")
    with open(path2, "w") as f:
        f.write(open(path).read().replace(f'"{full}"', f'"{full2}"'))
    p = run(path2, limit=sizes - 4096)  # the first checkpoint cannot be written
    expect_error("a full disk at the first save", p, "File too large")
    check(not os.path.exists(os.path.join(full2, "step-000000")), "no step-000000 after its failed save")
    check(not [d for d in os.listdir(full2) if d.endswith(".partial") or d.endswith(".tmp")], "nothing half-written left")
    # a limit between the checkpoint and the state: step 0's checkpoint completes, its state fails
    full3 = os.path.join(tmp, "full3")
    path3 = path.replace("full.flow", "full3.flow")
    with open(path3, "w") as f:
        f.write(open(path).read().replace(f'"{full}"', f'"{full3}"'))
    p = run(path3, limit=(sizes + state) // 2)
    expect_error("a full disk at the state's save", p, "File too large", "train_state")
    ck0 = os.path.join(full3, "step-000000")
    ok = os.path.isdir(ck0) and ls.load_checkpoint(ck0) is not None
    check(ok, "the checkpoint saved before the failure is complete and loads")
    check(not [d for d in os.listdir(full3) if d.endswith(".partial") or d.endswith(".tmp")], "nothing half-written left")
    p = run(path3, "resume=true")
    check(p.returncode == 0, "resume = true after the disk grew completes the run")
    check(open(os.path.join(full3, "loss.csv")).read() == open(os.path.join(full, "loss.csv")).read(),
          "and its loss.csv is the uninterrupted run's")
    if failures:
        print(f"kept {tmp} for inspection", flush=True)
    else:
        shutil.rmtree(tmp)
    sys.exit(1 if failures else 0)


main()
