#!/usr/bin/python3
"""The demo's training stream, as the paper's data (tokenizer balance = "en,ja" and a shuffle buffer,
pipelines/demo-train.flow), stopped and resumed: a run stopped part-way (max_tokens) and resumed with
resume=true trains the same model as an uninterrupted run, byte for byte, because the seeded shuffle
replays the same order and the trainer skips the sequences its checkpoint lists. Exits 77 without
data/suite or the stages.

  test_live_resume.py SAEFLOW SOURCE_ROOT
"""
import os
import shutil
import subprocess
import sys
import tempfile

SAEFLOW, ROOT = os.path.abspath(sys.argv[1]), sys.argv[2]
if not os.path.isdir(os.path.join(ROOT, "data", "suite", "step-001000")):
    print("SKIP: no data/suite")
    sys.exit(77)
for stage in ("text_source", "tokenizer", "forward"):
    if subprocess.run([SAEFLOW, "stages", stage], capture_output=True).returncode != 0:
        print(f"SKIP: stage {stage} not built")
        sys.exit(77)
failures = 0


def check(ok, what):
    global failures
    failures += not ok
    print("ok  " if ok else "FAIL", what)


def train(runs, *overrides):
    os.makedirs(os.path.join(runs, "step-001000"), exist_ok=True)
    p = subprocess.run([SAEFLOW, "run", "pipelines/demo-train.flow", "--no-progress", f"runs={runs}", "docs=120",
                        "batch=256", "warmup=5", "seqs_per_doc=4", "step=step-001000"] + list(overrides),
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        print(p.stderr[-3000:])
    with open(os.path.join(runs, "step-001000", "sae", "model.safetensors"), "rb") as f:
        return p.returncode, f.read(), p.stderr


tmp = tempfile.mkdtemp(prefix="sae_live_resume_")
try:
    rc, whole, err = train(f"{tmp}/whole", "train_tokens=40000", "seed=3")
    check(rc == 0 and "balance: label ja:" in err and "balance_dropped_surplus" in err,
          "uninterrupted run on the balanced, shuffled stream (the balance logged)")
    rc1, _, _ = train(f"{tmp}/cut", "train_tokens=15000", "seed=3")
    rc2, resumed, err = train(f"{tmp}/cut", "train_tokens=40000", "seed=3", "resume=true")
    check(rc1 == 0 and rc2 == 0 and "already-trained sequences" in err, "stopped at 15000 tokens, resumed")
    check(resumed == whole, "stopped + resumed = uninterrupted, byte for byte")
finally:
    shutil.rmtree(tmp)
sys.exit(1 if failures else 0)
