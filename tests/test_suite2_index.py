#!/usr/bin/python3
"""tools/suite2_index.py, which lays a seed of the second suite out like data/suite/: on a seed
directory built here from lm_trainer's output format (its checkpoints.json list, step directories
holding the first suite's real step-0 weights), the parameter count must equal data/suite's
(counted by PyTorch's numel in tools/train_suite.py), every checkpoint must appear with its dir,
step and tokens_seen, the step links and the tokenizer link must resolve to the right files, a
rerun must give the same file, and a seed directory without checkpoints is an error.
usage: test_suite2_index.py SOURCE_ROOT"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

root = sys.argv[1]
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def index(seed_dir):
    return subprocess.run([sys.executable, os.path.join(root, "tools", "suite2_index.py"), seed_dir,
                           "--settings", '{"training": {"seed": 7}}'], cwd=root, capture_output=True, text=True)


with open(os.path.join(root, "data", "suite", "checkpoints.json")) as f:
    suite1 = json.load(f)

with tempfile.TemporaryDirectory() as tmp:
    seed = os.path.join(tmp, "seed-7")
    os.makedirs(os.path.join(seed, "train"))
    r = index(seed)
    check(r.returncode != 0 and "no checkpoints yet" in r.stderr, "no checkpoints.json: an error naming it")

    saves = []
    for step, tokens in ((0, 0), (10, 20480)):
        name = "step-%06d" % step
        d = os.path.join(seed, "train", name)
        os.makedirs(d)
        for fn in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(root, "data", "suite", "step-000000", fn), d)
        saves.append({"checkpoint": name, "path": d, "step": step, "tokens_seen": tokens,
                      "train_loss": None if step == 0 else 8.5, "val_loss": 9.0 - step / 100,
                      "val_seqs": 256, "dtype": "bf16"})
    with open(os.path.join(seed, "train", "checkpoints.json"), "w") as f:
        json.dump(saves, f)

    r = index(seed)
    check(r.returncode == 0, "index runs (%s)" % r.stderr.strip())
    with open(os.path.join(seed, "checkpoints.json")) as f:
        out = json.load(f)
    check(out["parameters"] == suite1["parameters"] == 3565632,
          "parameters %s = data/suite's %s" % (out["parameters"], suite1["parameters"]))
    check([(c["dir"], c["step"], c["tokens_seen"]) for c in out["checkpoints"]]
          == [("step-000000", 0, 0), ("step-000010", 10, 20480)], "checkpoints: dir, step, tokens_seen")
    check(out["checkpoints"][1]["tokens_per_parameter"] == round(20480 / 3565632, 4), "tokens_per_parameter")
    check(out["checkpoints"][1]["valid_loss"] == 8.9 and out["checkpoints"][0]["train_loss"] is None,
          "losses carried over")
    check(out["model_config"]["hidden_size"] == 192 and out["training"] == {"seed": 7}, "config and settings")
    for name in ("step-000000", "step-000010"):
        link = os.path.join(seed, name)
        check(os.path.islink(link) and os.readlink(link) == os.path.join("train", name)
              and os.path.isfile(os.path.join(link, "model.safetensors")), name + " links to train/" + name)
    tok = os.path.join(seed, "tokenizer.model")
    with open(tok, "rb") as a, open(os.path.join(root, "data", "suite", "tokenizer.model"), "rb") as b:
        check(os.path.islink(tok) and a.read() == b.read(), "tokenizer.model resolves to data/suite's")

    first = open(os.path.join(seed, "checkpoints.json")).read()
    r = index(seed)
    check(r.returncode == 0 and open(os.path.join(seed, "checkpoints.json")).read() == first, "rerun: same file")

sys.exit(1 if failures else 0)
