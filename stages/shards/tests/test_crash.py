"""Crash and resume: the writer (a real process) is killed with SIGKILL at random moments, again
and again, each time resuming the same directory. After every kill the manifest must name only
complete shards (size and CRC match) holding, per split, exactly a prefix of that split's input;
at the end every input sequence must be stored exactly once, with its data.
Usage: test_crash.py SHARDS_DRIVER [KILLS]"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shardlib  # noqa: E402
from shardlib import check, expected_rows, init, load_dir  # noqa: E402

init()
KILLS = int(sys.argv[2]) if len(sys.argv) > 2 else 40
NSEQ, D = 2500, 16
tmp = tempfile.mkdtemp(prefix="shards-crash-")
d = os.path.join(tmp, "run")
args = [shardlib.DRIVER, "write", d, "--seqs", str(NSEQ), "--d", str(D), "--shard-kb", "3", "--sleep-us", "300"]
want = {sp: expected_rows(NSEQ, D, sp) for sp in ("train", "validation")}


def check_prefix(final):
    """Every named shard is complete; per split the stored rows are a prefix of the input."""
    if not os.path.exists(os.path.join(d, "manifest.json")):
        check(not final, "no manifest at the end")
        return 0
    m, cols = load_dir(d)
    for sp, w in want.items():
        got = cols.get(sp)
        n = 0 if got is None else len(got["seq"])
        if got is not None:
            for k in ("seq", "pos", "doc_id", "tokens"):
                check(np.array_equal(got[k], w[k][:n]), f"split {sp}: column {k} is not a prefix of the input")
            check(np.array_equal(got["acts"], w["acts"][:n]), f"split {sp}: acts are not a prefix of the input")
            check(n == len(w["seq"]) or w["seq"][n] != w["seq"][n - 1], f"split {sp}: a sequence was cut")
        if final:
            check(n == len(w["seq"]), f"split {sp}: {n} rows stored, {len(w['seq'])} in the input")
    return m["sequences"]


rng = random.Random(int(os.environ.get("SHARDS_CRASH_SEED", "12345")))
t0 = time.time()
p = subprocess.run(args[:2] + [os.path.join(tmp, "timing")] + args[3:], capture_output=True, text=True)
full = time.time() - t0
check(p.returncode == 0, f"uninterrupted run failed: {p.stderr}")
stats = {"killed": 0, "finished": 0, "orphans_seen": 0, "tmp_seen": 0}
stored_before = 0
for i in range(KILLS):
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(rng.uniform(0.0, full / 6))
    proc.kill()
    out, err = proc.communicate()
    if proc.returncode == 0:
        stats["finished"] += 1
    else:
        check(proc.returncode == -9, f"writer failed by itself (exit {proc.returncode}): {err}")
        stats["killed"] += 1
    names = os.listdir(d) if os.path.isdir(d) else []
    stats["tmp_seen"] += any(n.endswith(".tmp") for n in names)
    if os.path.exists(os.path.join(d, "manifest.json")):
        listed = {s["file"] for s in json.load(open(os.path.join(d, "manifest.json")))["shards"]}
        stats["orphans_seen"] += any(n.endswith(".safetensors") and n not in listed for n in names)
    stored = check_prefix(final=False)
    check(stored >= stored_before, "stored sequences went down")
    stored_before = stored
p = subprocess.run(args, capture_output=True, text=True)
check(p.returncode == 0, f"final run failed: {p.stderr}")
check_prefix(final=True)
m = json.load(open(os.path.join(d, "manifest.json")))
check(m["complete"] and m["sequences"] == NSEQ, "final manifest")
names = set(os.listdir(d)) - {"manifest.json"}
check(names == {s["file"] for s in m["shards"]}, "stray files after the final run")
print(f"uninterrupted run {full:.2f} s; {stats}; {len(m['shards'])} shards")
check(stats["killed"] >= KILLS // 2, "too few runs were actually interrupted")
print("ok")
