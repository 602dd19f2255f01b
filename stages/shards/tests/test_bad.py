"""Damaged directories and refused runs: truncated and corrupted shards are reported by name, bad
manifests are refused, a run of another model/hook/dtype/width is refused without touching the
directory, write failures stop cleanly leaving valid shards, and resuming afterwards completes
the run exactly; a resumed writer verifies the stored shards' CRC-32s and refuses a damaged one;
a run that stores nothing into a fresh directory fails and leaves none.
Usage: test_bad.py SHARDS_DRIVER"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shardlib  # noqa: E402
from shardlib import check, expected_rows, init, load_dir, make_tmp, run  # noqa: E402

init()
tmp = make_tmp("shards-bad-")
NSEQ, D = 200, 16
good = os.path.join(tmp, "good")
run("write", good, "--seqs", NSEQ, "--d", D, "--shard-kb", 4)
manifest = json.load(open(os.path.join(good, "manifest.json")))
victim = manifest["shards"][2]["file"]


def copy(name):
    d = os.path.join(tmp, name)
    shutil.copytree(good, d)
    return d


def expect_error(args, *words):
    p = run(*args, ok=False)
    for w in words:
        check(w in p.stderr + p.stdout, f"{' '.join(map(str, args))}: error does not mention '{w}':\n{p.stderr}{p.stdout}")
    return p


# Truncated shard: reader and inspect --verify name it, with or without CRC checks.
d = copy("trunc")
with open(os.path.join(d, victim), "r+b") as f:
    f.truncate(os.path.getsize(os.path.join(d, victim)) - 10)
expect_error(["read", d], victim, "truncated")
expect_error(["read", d, "--no-verify"], victim, "truncated")
p = expect_error(["cmd", "inspect", d, "--verify"], victim, "FAILED: 1 bad shard")
check(p.stdout.count("BAD") == 1, "inspect must flag exactly one shard")
# A resumed writer refuses a damaged directory instead of appending to it.
expect_error(["write", d, "--seqs", NSEQ, "--d", D, "--shard-kb", 4], victim, "truncated", "extract into another")

# One flipped byte in the activations: CRC catches it, by name.
d = copy("flip")
path = os.path.join(d, victim)
raw = bytearray(open(path, "rb").read())
raw[-200] ^= 0x40
open(path, "wb").write(raw)
expect_error(["read", d], victim, "corrupt", "CRC-32")
expect_error(["cmd", "inspect", d, "--verify"], victim, "BAD")
run("read", d, "--no-verify")  # documented: without verify the layout checks pass, the data is not checked
# A resumed writer verifies the shards it keeps: the flipped one is refused by name, and the
# manifest (the complete directory the first run left) is not touched.
before = open(os.path.join(d, "manifest.json"), "rb").read()
expect_error(["write", d, "--seqs", NSEQ, "--d", D, "--shard-kb", 4], victim, "corrupt", "CRC-32",
             "extract into another")
check(open(os.path.join(d, "manifest.json"), "rb").read() == before, "a refused resume changed the manifest")

# Random damage to a shard's header and to its tensor table, read without the CRC check (which
# would catch it first): every variant is refused or read, never a crash.
d = copy("fuzz")
path = os.path.join(d, victim)
orig = open(path, "rb").read()
rng = np.random.default_rng(5)
outcomes = {0: 0, 1: 0}
for i in range(150):
    raw = bytearray(orig)
    for _ in range(1 + i % 4):
        raw[int(rng.integers(0, 300 if i % 3 else 8))] = int(rng.integers(0, 256))
    if i % 10 == 9:
        raw = raw[: int(rng.integers(0, len(raw)))]
    open(path, "wb").write(bytes(raw))
    manifest_bytes = len(raw)
    m = json.load(open(os.path.join(good, "manifest.json")))
    for s_ in m["shards"]:
        if s_["file"] == victim:
            s_["bytes"] = manifest_bytes  # so the size check passes and the parser is reached
    json.dump(m, open(os.path.join(d, "manifest.json"), "w"))
    p = run("read", d, "--no-verify", ok=None)
    check(p.returncode in (0, 1), f"damaged header {i}: exit {p.returncode}\n{p.stderr[-2000:]}")
    outcomes[p.returncode] += 1
check(outcomes[1] > 50, f"most damaged headers must be refused: {outcomes}")

# A shard the manifest names is missing.
d = copy("missing")
os.unlink(os.path.join(d, victim))
expect_error(["read", d], victim)
expect_error(["write", d, "--seqs", NSEQ, "--d", D], victim, "No such file")

# Bad manifests: each is refused with a message naming the manifest.
def mutate(name, fn, *words):
    d = copy("m-" + name)
    m = json.load(open(os.path.join(d, "manifest.json")))
    text = fn(m)
    open(os.path.join(d, "manifest.json"), "w").write(text if isinstance(text, str) else json.dumps(m))
    expect_error(["read", d], "manifest", *words)
    expect_error(["cmd", "inspect", d], "manifest")
    expect_error(["write", d, "--seqs", NSEQ, "--d", D], "manifest")


def setter(path, value):
    def fn(m):
        o = m
        for k in path[:-1]:
            o = o[k]
        o[path[-1]] = value
    return fn


mutate("json", lambda m: '{"format": "saeflow-shards", ')
mutate("array", lambda m: "[1, 2]", "JSON object")
mutate("format", setter(["format"], "other"), "format")
mutate("version", setter(["version"], 2), "version")
mutate("nomodel", lambda m: m.pop("model"), "model")
mutate("dtype", setter(["dtype"], "F64"), "dtype")
mutate("d", setter(["d"], 0), "'d'")
mutate("count", setter(["count"], manifest["count"] + 1), "count")
mutate("escape", setter(["shards", 0, "file"], "../good/" + manifest["shards"][0]["file"]), "base name")
mutate("negcount", setter(["shards", 1, "count"], -5), "count")
mutate("crc", setter(["shards", 1, "crc32"], "deadbeef"), "crc32")
mutate("dup", lambda m: m["shards"].__setitem__(1, dict(m["shards"][0])), "")
mutate("labels", setter(["labels"], "en"), "labels")
mutate("complete", setter(["complete"], 1), "complete")
mutate("split", setter(["shards", 0, "split"], "a/b"), "split")
# A label index beyond the manifest's list is caught when the shard is opened.
d = copy("labels-short")
m = json.load(open(os.path.join(d, "manifest.json")))
m["labels"] = m["labels"][:1]
json.dump(m, open(os.path.join(d, "manifest.json"), "w"))
expect_error(["read", d, "--split", "train"], "label index")

# Refused runs leave the directory byte-identical.
d = copy("refuse")
before = {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)}
expect_error(["write", d, "--seqs", NSEQ, "--d", D, "--model", "other"], "refusing to mix", "other")
expect_error(["write", d, "--seqs", NSEQ, "--d", D, "--hook", "resid_post.5"], "refusing to mix")
expect_error(["write", d, "--seqs", NSEQ, "--d", D, "--layer", 4], "refusing to mix")
expect_error(["write", d, "--seqs", NSEQ, "--d", 32], "refusing to mix")
expect_error(["write", d, "--seqs", NSEQ, "--d", D, "--dtype", "BF16"], "holds F32 shards", "BF16")
expect_error(["write", d, "--seqs", NSEQ, "--d", D, "--no-resume"], "resume is off")
# A shorter input cannot be the stored run's input.
expect_error(["write", d, "--seqs", NSEQ // 2, "--d", D], "never arrived")
after = {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)}
check(before.keys() == after.keys() and all(before[f] == after[f] for f in before), "a refused run changed files")

# Two writers on one directory: the second is refused while the first runs.
d = os.path.join(tmp, "busy")
first = subprocess.Popen([shardlib.DRIVER, "write", d, "--seqs", "400", "--d", str(D), "--sleep-us", "5000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.3)
expect_error(["write", d, "--seqs", 400, "--d", D], "another writer")
first.kill()
first.wait()
run("write", d, "--seqs", 400, "--d", D)  # the lock died with the process

# Unwritable destination: clear error.
blocker = os.path.join(tmp, "plainfile")
open(blocker, "w").write("x")
expect_error(["write", os.path.join(blocker, "run"), "--seqs", 10], "plainfile")
expect_error(["read", os.path.join(tmp, "nothing-here")], "manifest.json")
expect_error(["read", good, "--split", "test"], "no shards of split 'test'", "train", "validation")

# Write failures (RLIMIT_FSIZE makes write(2) fail as a full disk would).
# a) the first shard cannot be written: error, no shard, no temp file left.
d = os.path.join(tmp, "full1")
expect_error(["write", d, "--seqs", NSEQ, "--d", D, "--shard-kb", 64, "--fsize-limit", 20000], "writing", "File too large")
check(not [f for f in os.listdir(d) if f != "manifest.json"], f"leftovers after a failed first shard: {os.listdir(d)}")
# b) shards fit but the growing manifest stops fitting: the run stops, the manifest on disk
#    stays the last good one and every shard it names verifies; resuming completes the run.
d = os.path.join(tmp, "full2")
expect_error(["write", d, "--seqs", NSEQ, "--d", D, "--shard-kb", 1, "--fsize-limit", 12000], "manifest.json")
m1 = json.load(open(os.path.join(d, "manifest.json")))
check(0 < len(m1["shards"]) and not m1["complete"], "expected a partial manifest")
run("cmd", "inspect", d, "--verify")
check(not any(f.endswith(".tmp") for f in os.listdir(d)), "temp files left")
p = run("write", d, "--seqs", NSEQ, "--d", D, "--shard-kb", 1)
check("skipped" in p.stdout and " 0 sequences" not in p.stdout, f"resume should skip stored sequences: {p.stdout}")
m, cols = load_dir(d)
check(m["complete"] and m["sequences"] == NSEQ, "resumed run incomplete")
for split in ("train", "validation"):
    w = expected_rows(NSEQ, D, split)
    check(all(np.array_equal(cols[split][k], w[k]) for k in ("doc_id", "pos", "acts")),
          f"{split}: rows after resume are not each input exactly once")
names = set(os.listdir(d)) - {"manifest.json"}
check(names == {s["file"] for s in m["shards"]}, f"stray files: {names ^ {s['file'] for s in m['shards']}}")
# A real full disk (ENOSPC), where a small tmpfs can be mounted (root): the run stops naming the
# file, the manifest stays valid, and after the disk grows the resumed run completes exactly.
mnt = os.path.join(tmp, "small")
os.mkdir(mnt)
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt], capture_output=True).returncode == 0:
    try:
        d = os.path.join(mnt, "run")
        expect_error(["write", d, "--seqs", NSEQ, "--d", D, "--shard-kb", 16], "No space left on device")
        run("cmd", "inspect", d, "--verify")
        subprocess.run(["mount", "-o", "remount,size=4m", mnt], check=True)
        run("write", d, "--seqs", NSEQ, "--d", D, "--shard-kb", 16)
        m, cols = load_dir(d)
        check(m["complete"] and all(np.array_equal(cols[sp]["pos"], expected_rows(NSEQ, D, sp)["pos"])
                                    for sp in ("train", "validation")), "ENOSPC resume: rows not exactly once")
    finally:
        subprocess.run(["umount", mnt])
else:
    print("note: cannot mount a small tmpfs here; ENOSPC checked only through RLIMIT_FSIZE above")
# Nothing to store into a fresh directory is an error, and leaves no directory (it used to warn,
# exit 0 and leave an empty one, which a reader then called "not a shard directory").
d = os.path.join(tmp, "nothing")
expect_error(["write", d, "--seqs", 0, "--d", D], "no activations arrived: nothing written to")
check(not os.path.exists(d), "a run that stored nothing left its directory behind")
print("ok")
