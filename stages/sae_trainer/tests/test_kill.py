#!/usr/bin/python3
"""Fault injection: the trainer's process is killed (SIGKILL: no finish, no checkpoint of its own)
at seeded random moments, several times, each time resumed (resume = true, from the last periodic
checkpoint); the final model must equal an uninterrupted run's. After every kill the directory
holds no model marked complete and a loadable checkpoint whose step never goes back.

The trainer claims bit-identical resumes (README): the models are compared byte for byte, under
whatever OpenBLAS kernel the environment selects (the encoder's sgemms run in fixed tiles, so the
Haswell kernel's position-dependent rounding does not move; a difference is reported as the largest
weight difference relative to the largest weight).
The pipeline is test_stage.py's (tensor_gen -> sae_trainer, 30 steps, a checkpoint every 3).

  test_kill.py SAEFLOW [KILLS]
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_stage import PIPELINE, read_st  # noqa: E402

SAEFLOW = os.path.abspath(sys.argv[1])
KILLS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
rng = random.Random(int(os.environ.get("SAE_KILL_SEED", "4321")))
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def args(out, *extra):
    # 120 messages 20 ms apart: about 2.4 s a run, so kills land before, between and after steps.
    return [SAEFLOW, "run", "p.sf", "--no-progress", f"out={out}", "delay=20000", "ckpt_every=3", *extra]


def main():
    tmp = tempfile.mkdtemp(prefix="sae_kill_")
    with open(os.path.join(tmp, "p.sf"), "w") as f:
        f.write(PIPELINE)
    t0 = time.time()
    p = subprocess.run(args("full"), cwd=tmp, capture_output=True, text=True, timeout=300)
    full_time = time.time() - t0
    check(p.returncode == 0, f"uninterrupted run ({full_time:.1f} s) {p.stderr[-500:] if p.returncode else ''}")

    ck = os.path.join(tmp, "killed", "checkpoint.safetensors")
    cfg = os.path.join(tmp, "killed", "config.json")
    last_step, steps_at_kill, killed = 0, [], 0
    for i in range(KILLS):
        proc = subprocess.Popen(args("killed", "resume=true"), cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.2, full_time * 0.8))
        proc.send_signal(signal.SIGKILL)
        err = proc.communicate(timeout=60)[1]
        if proc.returncode != -signal.SIGKILL:
            check(proc.returncode == 0, f"kill {i}: the run ended by itself with exit {proc.returncode}: {err[-300:]}")
            break  # it finished before the kill: nothing more to interrupt
        killed += 1
        complete = os.path.exists(cfg) and json.load(open(cfg))["saeflow_training"]["complete"]
        check(not complete, f"kill {i}: no model marked complete")
        step = int(read_st(ck)[1]["step"]) if os.path.exists(ck) else 0
        check(step >= last_step, f"kill {i}: the checkpoint loads, at step {step} (was {last_step})")
        last_step = step
        steps_at_kill.append(step)
    p = subprocess.run(args("killed", "resume=true"), cwd=tmp, capture_output=True, text=True, timeout=300)
    check(p.returncode == 0, f"the last resume finishes {p.stderr[-500:] if p.returncode else ''}")
    check(killed >= 3, f"{killed} runs were killed mid-way (checkpoint steps at the kills: {steps_at_kill})")
    check(json.load(open(cfg))["saeflow_training"]["complete"], "the resumed model is marked complete")

    a, _ = read_st(os.path.join(tmp, "full", "model.safetensors"))
    b, _ = read_st(os.path.join(tmp, "killed", "model.safetensors"))
    exact = open(os.path.join(tmp, "full", "model.safetensors"), "rb").read() == \
        open(os.path.join(tmp, "killed", "model.safetensors"), "rb").read()
    scale = max(float(np.abs(a[k]).max()) for k in a)
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a) / scale
    check(exact, f"killed {killed} times and resumed: model.safetensors byte-identical to the uninterrupted run"
                 + ("" if exact else f" (NOT: max weight difference {diff:.2e} of the largest weight)"))
    if failures == 0:
        shutil.rmtree(tmp)
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
