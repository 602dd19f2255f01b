"""Crash and resume: the writer (a real process) is killed with SIGKILL at random moments, again
and again, each time resuming the same directory. After every kill the manifest must name only
complete shards (size and CRC match) holding input rows with their data and no duplicate; with
the input in stream order, each split's rows are exactly a prefix of its input. At the end every
input sequence is stored exactly once. A second loop delivers the batches in a different order
in every run (as replicated upstream stages do), so resuming cannot rely on order. Each loop ends
comparing the resumed directory with an uninterrupted run's, column by column.
Usage: test_crash.py SHARDS_DRIVER [KILLS]"""
import json
import os
import random
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shardlib  # noqa: E402
from shardlib import check, expected_rows, init, load_dir, make_tmp  # noqa: E402

init()
KILLS = int(sys.argv[2]) if len(sys.argv) > 2 else 40
NSEQ, D = 2500, 16
tmp = make_tmp("shards-crash-")
want = {sp: expected_rows(NSEQ, D, sp) for sp in ("train", "validation")}
rng = random.Random(int(os.environ.get("SHARDS_CRASH_SEED", "12345")))


def args(d, reorder=0):
    return [shardlib.DRIVER, "write", d, "--seqs", str(NSEQ), "--d", str(D), "--shard-kb", "3", "--sleep-us", "300",
            "--reorder", str(reorder)]


def check_stored(d, in_order, final):
    """Every named shard is complete; rows are input rows with their data, none twice; in order,
    each split holds a prefix of its input; at the end, all of it."""
    if not os.path.exists(os.path.join(d, "manifest.json")):
        check(not final, "no manifest at the end")
        return 0
    m, cols = load_dir(d)
    for sp, w in want.items():
        got = cols.get(sp)
        n = 0 if got is None else len(got["seq"])
        if got is not None:
            if in_order:
                for k in ("pos", "doc_id", "tokens", "acts"):
                    check(np.array_equal(got[k], w[k][:n]), f"split {sp}: column {k} is not a prefix of the input")
            else:  # match rows to the input by (doc_id, pos): each at most once, with its data
                index = {key: i for i, key in enumerate(zip(w["doc_id"].tolist(), w["pos"].tolist()))}
                rows = [index.get(key, -1) for key in zip(got["doc_id"].tolist(), got["pos"].tolist())]
                check(min(rows) >= 0 and len(set(rows)) == n, f"split {sp}: unknown or duplicate rows")
                check(np.array_equal(got["acts"], w["acts"][rows]) and np.array_equal(got["tokens"], w["tokens"][rows]),
                      f"split {sp}: rows do not hold their input's data")
            # seq numbers sequences in write order: increasing, constant within a sequence.
            q = got["seq"]
            check(np.all(np.diff(q) >= 0), f"split {sp}: seq not increasing")
            same_seq = np.diff(q) == 0
            same_doc = (np.diff(got["doc_id"]) == 0) & (np.diff(got["pos"]) == 1)
            check(np.all(same_doc[same_seq]), f"split {sp}: a sequence's rows are not consecutive tokens")
        if final:
            check(n == len(w["seq"]), f"split {sp}: {n} rows stored, {len(w['seq'])} in the input")
    return m["sequences"]


def kill_loop(name, kills, reorder):
    d = os.path.join(tmp, name)
    t0 = time.time()
    p = subprocess.run(args(os.path.join(tmp, name + "-timing")), capture_output=True, text=True)
    full = time.time() - t0
    check(p.returncode == 0, f"uninterrupted run failed: {p.stderr}")
    stats = {"killed": 0, "finished": 0, "orphans_seen": 0, "tmp_seen": 0}
    stored_before = 0
    for i in range(kills):
        proc = subprocess.Popen(args(d, reorder and i + 1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.0, full / 8))
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
        stored = check_stored(d, not reorder, final=False)
        check(stored >= stored_before, "stored sequences went down")
        stored_before = stored
    p = subprocess.run(args(d, reorder and 999), capture_output=True, text=True)
    check(p.returncode == 0, f"final run failed: {p.stderr}")
    check_stored(d, not reorder, final=True)
    m = json.load(open(os.path.join(d, "manifest.json")))
    check(m["complete"] and m["sequences"] == NSEQ, "final manifest")
    names = set(os.listdir(d)) - {"manifest.json"}
    check(names == {s["file"] for s in m["shards"]}, "stray files after the final run")
    # The same rows as the uninterrupted run wrote: in order, column for column, bit for bit;
    # reordered, the same (doc_id, pos) rows with the same bytes. Not seq: it numbers sequences in
    # write order, and a split's sequences lost at a kill are written again after the other split's.
    ref_m, ref = load_dir(os.path.join(tmp, name + "-timing"))
    _, got = load_dir(d)
    check(ref_m["count"] == m["count"] and ref_m["sequences"] == m["sequences"], "totals differ from the uninterrupted run")
    for sp in ref:
        order = np.arange(len(ref[sp]["seq"])) if not reorder else np.lexsort((ref[sp]["pos"], ref[sp]["doc_id"]))
        mine = np.arange(len(got[sp]["seq"])) if not reorder else np.lexsort((got[sp]["pos"], got[sp]["doc_id"]))
        for k in ref[sp]:
            if k == "seq":
                continue
            check(np.array_equal(ref[sp][k][order], got[sp][k][mine]),
                  f"split {sp}: column {k} differs from the uninterrupted run's")
    print(f"{name}: uninterrupted run {full:.2f} s; {stats}; {len(m['shards'])} shards")
    check(stats["killed"] >= kills // 2, "too few runs were actually interrupted")


kill_loop("in-order", KILLS, reorder=False)
kill_loop("reordered", KILLS // 2, reorder=True)
print("ok")
