#!/usr/bin/python3
"""kill -9 and resume: the lm_trainer's process (the whole pipeline: text_source -> tokenizer ->
lm_trainer on the bundled corpus, a small Llama initialised from a seed) is killed with SIGKILL at
seeded random moments and resumed with resume = true each time until it completes. The stream (16
documents) is shorter than the run: later epochs replay it from memory in seeded orders, so kills
also land there. The resumed
run's loss.csv (every step's loss, lr and gradient norm, printed exactly) and its final checkpoint
must be byte-identical to an uninterrupted run's, and checkpoints.json must list the same saves
with the same losses. The same after a Ctrl-C (SIGINT), which saves the state where it stopped. After every kill the out directory holds no partial checkpoint under a final
name: each step-N directory it has loads (complete config.json + model.safetensors).

  test_kill.py SAEFLOW ROOT [KILLS]
"""
import json
import os
import random
import signal
import shutil
import subprocess
import sys
import tempfile
import time

SAEFLOW, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
KILLS = int(sys.argv[3]) if len(sys.argv) > 3 else 4
rng = random.Random(int(os.environ.get("LM_KILL_SEED", "2026")))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import safetensors_np as st  # noqa: E402

failures = 0

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
          "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
          "vocab_size": 8000, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}

PIPELINE = """stage docs = text_source {
    corpora = "%(root)s/data/corpus/debian-docs.jsonl.gz"
    label_field = lang
    id_field = id
    split_field = split
    split = all
    max_docs = 16
    seed = 3
}
stage tok = tokenizer {
    input = docs
    tokenizer = "%(root)s/data/suite/tokenizer.model"
    seq_len = 64
    batch = 8
}
stage lm = lm_trainer {
    input = tok
    config = "%(tmp)s/model"
    seed = 5
    out_dir = "${out}"
    steps = 60
    batch = 4
    accum = 2
    warmup = 5
    schedule = wsd
    save_steps = "0,10,30,final"
    state_every = 4
    valid_seqs = 8
    epochs = 4
    threads = 1
    resume = ${resume}
}
"""


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def args(tmp, out, *extra):
    return [SAEFLOW, "run", os.path.join(tmp, "p.flow"), "--no-progress", f"out={out}", *extra]


def saves(out):
    idx = json.load(open(os.path.join(out, "checkpoints.json")))
    return [{k: v for k, v in e.items() if k != "path"} for e in idx]


def main():
    tmp = tempfile.mkdtemp(prefix="lm_kill_")
    os.makedirs(os.path.join(tmp, "model"))
    with open(os.path.join(tmp, "model", "config.json"), "w") as f:
        json.dump(CONFIG, f)
    with open(os.path.join(tmp, "p.flow"), "w") as f:
        f.write("set out = out\nset resume = false\n" + PIPELINE % {"root": ROOT, "tmp": tmp})
    full = os.path.join(tmp, "full")
    t0 = time.time()
    p = subprocess.run(args(tmp, full), capture_output=True, text=True, timeout=600)
    full_time = time.time() - t0
    check(p.returncode == 0, f"uninterrupted run ({full_time:.1f} s){':' + p.stderr[-2000:] if p.returncode else ''}")
    if p.returncode:
        sys.exit(1)

    # out_dir removed by another process mid-run (how this test once failed, when a cleanup of /tmp
    # hit it): the next save fails and its error names the cause, whichever save it is
    gone = os.path.join(tmp, "gone")
    proc = subprocess.Popen(args(tmp, gone), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not os.path.isdir(os.path.join(gone, "step-000000")) and proc.poll() is None:
        time.sleep(0.01)
    while os.path.exists(gone):  # the run may be writing into it meanwhile
        shutil.rmtree(gone, ignore_errors=True)
    err = proc.communicate(timeout=600)[1]
    check(proc.returncode != 0 and f"out_dir {gone} is gone: another process removed" in err,
          f"out_dir removed during the run: the save fails naming it{'' if proc.returncode else ' (the run succeeded)'}")

    killed = os.path.join(tmp, "killed")
    n_kills, last_step = 0, -1
    for attempt in range(KILLS + 20):
        proc = subprocess.Popen(args(tmp, killed, "resume=true"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        if n_kills < KILLS:
            time.sleep(rng.uniform(0.2, full_time * 0.8))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                n_kills += 1
                state = os.path.join(killed, "train_state.safetensors")
                step = int(st.read(state)[1]["step"]) if os.path.exists(state) else -1
                check(step >= last_step, f"kill {n_kills}: the saved state is at step {step} (never behind {last_step})")
                last_step = step
                dirs = [d for d in os.listdir(killed) if d.startswith("step-") and not d.endswith(".partial")] \
                    if os.path.isdir(killed) else []
                ok = all(json.load(open(os.path.join(killed, d, "config.json")))["hidden_size"] == 64 and
                         st.read(os.path.join(killed, d, "model.safetensors")) for d in dirs)
                check(ok, f"kill {n_kills}: every step directory is complete ({sorted(dirs)})")
                continue
        err = proc.communicate(timeout=600)[1]
        check(proc.returncode == 0, f"resumed run completed after {n_kills} kills"
              + ("" if proc.returncode == 0 else ":\n" + err[-2000:]))
        break
    check(n_kills >= 2, f"{n_kills} kills landed during training")
    # Ctrl-C (SIGINT): the pipeline drains, the trainer saves its state at the step it reached
    # (exit 130), and the resumed run again ends with the uninterrupted run's loss curve.
    for attempt in range(3):  # signalled once a step is logged; a run that finished first is tried again
        inter = os.path.join(tmp, f"interrupted{attempt}")
        proc = subprocess.Popen(args(tmp, inter, "resume=true"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        log = os.path.join(inter, "loss.csv")
        while proc.poll() is None and not (os.path.exists(log) and open(log).read().count("\n") > 1):
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=600)[1]
        if proc.returncode != 0:
            break
    state = os.path.join(inter, "train_state.safetensors")
    step = int(st.read(state)[1]["step"]) if os.path.exists(state) else -1
    logged = open(os.path.join(inter, "loss.csv")).read().count("\n") - 1 if os.path.exists(state) else -2
    check(proc.returncode == 130 and step == logged and step > 0,
          f"SIGINT: exit {proc.returncode}, the state saved at the step reached ({step}, loss.csv has {logged})"
          + ("" if proc.returncode == 130 else ":\n" + err[-1500:]))
    p = subprocess.run(args(tmp, inter, "resume=true"), capture_output=True, text=True, timeout=600)
    check(p.returncode == 0 and open(os.path.join(inter, "loss.csv")).read() ==
          open(os.path.join(full, "loss.csv")).read(), "resumed after SIGINT: loss.csv identical")

    # resuming a finished run (its state at the last step, past the stream into the replayed epochs)
    before = open(os.path.join(full, "loss.csv")).read(), saves(full)
    p = subprocess.run(args(tmp, full, "resume=true"), capture_output=True, text=True, timeout=600)
    check(p.returncode == 0 and (open(os.path.join(full, "loss.csv")).read(), saves(full)) == before,
          "resume = true of a finished run: nothing to do, nothing changed" + ("" if p.returncode == 0 else ":\n" + p.stderr[-1500:]))

    a = open(os.path.join(full, "loss.csv")).read()
    b = open(os.path.join(killed, "loss.csv")).read()
    check(a == b and a.count("\n") == 61, f"loss.csv identical ({a.count(chr(10)) - 1} steps)")
    for d in ("step-000010", "step-000030", "step-000060"):
        same = open(os.path.join(full, d, "model.safetensors"), "rb").read() == \
            open(os.path.join(killed, d, "model.safetensors"), "rb").read()
        check(same, f"{d}/model.safetensors byte-identical")
    check(saves(full) == saves(killed), "checkpoints.json: the same saves, steps, tokens and losses")
    check(not [d for d in os.listdir(killed) if d.endswith(".partial")], "no .partial directory left")
    if failures:
        print(f"kept {tmp} for inspection", flush=True)
    else:
        shutil.rmtree(tmp)
    sys.exit(1 if failures else 0)


main()
