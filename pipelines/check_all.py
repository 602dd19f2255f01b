#!/usr/bin/env python3
"""Every pipeline file shipped in pipelines/ passes `saeflow check` (stage types, parameter names and
types, inputs, hosts, and each stage's own check of its parameters and the files they name: the
bundled suite's tokenizer and checkpoints), also with the variables their comments tell users to
override. Run from the repository's root, as the files' relative paths expect. A pipeline that reads
what another one writes (demo-mine.flow: demo-train.flow's SAE; train-from-shards.flow:
extract.flow's shards) is checked with `runs` pointing at an empty directory, and must then report
exactly that missing input, each finding naming its file:line. Files that need a stage this build
does not have are skipped, and if every one is, the test is. Every text_source of the shipped files
splits by the corpus's own split field, as the suite's LM was trained (one split everywhere: a hash
split would put the LM's training documents in the "test" split of one pipeline and not another).
Usage: check_all.py SAEFLOW PIPELINES_DIR"""
import glob
import os
import re
import subprocess
import sys
import tempfile

saeflow, folder = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
root = os.path.dirname(folder)
empty_runs = tempfile.mkdtemp(prefix="sf-check-runs-")
OVERRIDES = {"three-hosts.flow": [["resume=true", "skip=runs/three-hosts/shards,runs/three-hosts/sae"],
                                  ["on_b=A", "on_c=A"]],
             "train-from-shards.flow": [["resume=true", "epochs=2"]],
             "demo-mine.flow": [["sampling=paper-max"], ["sampling=strongest"]],
             "lm-train.flow": [["resume=true"], ["steps=100", "save_steps=0,10,final"]]}
# pipeline -> the parameters (in file order) whose findings are expected when its `runs` directory
# is empty, each reported at the line that sets it
NEEDS_RUN = {"demo-mine.flow": ["sae", "sae_dir", "sae"], "demo-pairs.flow": ["sae"], "train-from-shards.flow": ["dir"]}


def run_lines(path, params):
    """(line, "parameter 'P'") for each line of path that sets a parameter named in params."""
    return [(n, f"parameter '{m.group(1)}'") for n, line in enumerate(open(path), 1)
            for m in [re.match(r"\s*(\w+)\s*=", line)] if m and m.group(1) in params]
files = sorted(glob.glob(os.path.join(folder, "*.flow")))
if not files:
    sys.exit(f"FAIL: no pipeline files in {folder}")
checked = failed = 0
for path in files:  # one split everywhere: text_source blocks name split_field
    for block in re.findall(r"= text_source \{(.*?)\n\}", open(path).read(), re.S):
        if not re.search(r"^\s*split_field\s*=\s*split\b", block, re.M):
            print(f"FAIL: {path}: a text_source without 'split_field = split' splits by a hash of the id, unlike the demo")
            failed += 1
for path in files:
    name = os.path.basename(path)
    for extra in [[]] + OVERRIDES.get(name, []):
        args = extra + ([f"runs={empty_runs}"] if name in NEEDS_RUN else [])
        r = subprocess.run([saeflow, "check", path, *args], capture_output=True, text=True, cwd=root)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 and "unknown stage type" in out:
            print(f"skip: {path}: {out}")
            continue
        if name in NEEDS_RUN:
            want = run_lines(path, NEEDS_RUN[name])
            if [p for _, p in want] != [f"parameter '{p}'" for p in NEEDS_RUN[name]]:
                print(f"FAIL: {path}: the lines setting {NEEDS_RUN[name]} are {want}")
                failed += 1
                continue
            lines = [l for l in r.stderr.splitlines() if l.startswith(path + ":") and "problem" not in l]
            ok = r.returncode == 2 and len(lines) == len(want) and all(
                l.startswith(f"{path}:{n}:") and p in l and empty_runs in l for l, (n, p) in zip(lines, want))
        else:
            ok = r.returncode == 0 and ": ok (" in out
        if not ok:
            print(f"FAIL: {path} {' '.join(args)}: exit {r.returncode}: {out}")
            failed += 1
        else:
            print(f"ok: {path} {' '.join(args)}: {out}")
            checked += 1
if failed:
    sys.exit(1)
if not checked:
    print("skip: this build lacks the stages every pipeline file needs")
    sys.exit(77)
