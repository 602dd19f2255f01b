#!/usr/bin/env python3
"""Every pipeline file shipped in pipelines/ passes `saeflow check` (stage types, parameter names and
types, inputs, hosts), also with the variables their comments tell users to override. Files that
need a stage this build does not have are skipped, and if every one is, the test is.
Usage: check_all.py SAEFLOW PIPELINES_DIR"""
import glob
import os
import subprocess
import sys

saeflow, folder = sys.argv[1], sys.argv[2]
OVERRIDES = {"three-hosts.flow": [["resume=true", "skip=runs/three-hosts/shards,runs/three-hosts/sae"],
                                  ["on_b=A", "on_c=A"]],
             "train-from-shards.flow": [["resume=true", "epochs=2"]],
             "demo-mine.flow": [["sampling=paper-max"], ["sampling=strongest"]]}
files = sorted(glob.glob(os.path.join(folder, "*.flow")))
if not files:
    sys.exit(f"FAIL: no pipeline files in {folder}")
checked = failed = 0
for path in files:
    for extra in [[]] + OVERRIDES.get(os.path.basename(path), []):
        r = subprocess.run([saeflow, "check", path, *extra], capture_output=True, text=True)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 and "unknown stage type" in out:
            print(f"skip: {path}: {out}")
            continue
        if r.returncode != 0 or ": ok (" not in out:
            print(f"FAIL: {path} {' '.join(extra)}: {out}")
            failed += 1
        else:
            print(f"ok: {out} {' '.join(extra)}")
            checked += 1
if failed:
    sys.exit(1)
if not checked:
    print("skip: this build lacks the stages every pipeline file needs")
    sys.exit(77)
