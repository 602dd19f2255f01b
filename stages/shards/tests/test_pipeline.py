"""The stages inside `saeflow run`: shard_source feeds shard_writer (a copy of a shard directory,
converted to BF16), in order, shuffled and with replicas; the copy must hold exactly the source
rows. Then the copy pipeline is killed with SIGKILL (and once interrupted with SIGINT) at random
moments and re-run until it completes: the result must equal an uninterrupted copy.
Usage: test_pipeline.py SHARDS_DRIVER SAEFLOW"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shardlib import check, init, load_dir, make_tmp, run  # noqa: E402

init()
SAEFLOW = os.path.abspath(sys.argv[2])
tmp = make_tmp("shards-pipe-")
D = 64
src = os.path.join(tmp, "src")
run("write", src, "--seqs", 30000, "--d", D, "--shard-kb", 2048)
m_src, c_src = load_dir(src)
train = c_src["train"]
labels_src = np.array(m_src["labels"])
bf16 = torch.from_numpy(train["acts"].copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)

# Values are written into the file (not KEY=VALUE overrides: see README, core note).
PIPE = """
stage source = shard_source {
    dir = "${src}"
    split = train
    batch_seqs = 5
    batch_rows = 300
    buffer_rows = 2000
    shuffle = ${shuffle}
    replicas = ${replicas}
}
stage sink = shard_writer {
    input = source
    dir = "${dst}"
    dtype = BF16
    shard_mb = 1
}
"""


def cmd(dst, shuffle="false", replicas=1):
    pipe = os.path.join(tmp, os.path.basename(dst) + ".sf")
    text = PIPE
    for k, v in dict(src=src, dst=dst, shuffle=shuffle, replicas=replicas).items():
        text = text.replace("${%s}" % k, str(v))
    open(pipe, "w").write(text)
    return [SAEFLOW, "run", pipe, "--no-progress"]


def saeflow(dst, ok=True, **kw):
    p = subprocess.run(cmd(dst, **kw), capture_output=True, text=True, timeout=120)
    check((p.returncode == 0) == ok, f"saeflow exit {p.returncode}: {p.stderr[-3000:]}")
    return p


def rows(d):
    m, c = load_dir(d)
    t = c["train"]
    return m, t, np.array(m["labels"])[t["label"]]


def key(t, lab):
    """Rows as sortable records (doc_id, pos, token, label, acts bytes)."""
    return sorted(zip(t["doc_id"].tolist(), t["pos"].tolist(), t["tokens"].tolist(), lab.tolist(),
                      [a.tobytes() for a in t["acts"]]))


# In order: the copy is the source, row for row, in BF16, with sequences renumbered from 0.
dst = os.path.join(tmp, "inorder")
saeflow(dst)
m, t, lab = rows(dst)
check(m["complete"] and m["dtype"] == "BF16" and m["hook"] == m_src["hook"] and m["model"] == m_src["model"],
      "copy manifest identity")
check(np.array_equal(t["acts"], bf16), "copied acts differ from torch's bf16 rounding of the source")
for k in ("tokens", "doc_id", "pos"):
    check(np.array_equal(t[k], train[k]), f"in-order copy: column {k} differs")
check(np.array_equal(lab, labels_src[train["label"]]), "in-order copy: labels differ")
_, first = np.unique(train["seq"], return_index=True)
check(np.array_equal(np.unique(t["seq"]), np.arange(len(first))), "copy sequences not numbered 0..n-1")
want = key(dict(doc_id=train["doc_id"], pos=train["pos"], tokens=train["tokens"], acts=bf16), labels_src[train["label"]])

# Shuffled, and with two source replicas: the same rows, as a multiset.
for name, kw in (("shuffled", dict(shuffle="true")), ("replicas", dict(replicas=2))):
    dst = os.path.join(tmp, name)
    saeflow(dst, **kw)
    m, t, lab = rows(dst)
    check(key(t, lab) == want, f"{name} copy does not hold each source row exactly once")
    if name == "shuffled":
        check(not np.array_equal(t["doc_id"], train["doc_id"]), "shuffled copy is in source order")
        check(m["sequences"] == len(train["seq"]), "shuffled rows must arrive as one-token sequences")

# Kill and resume through the runtime: with one source (a deterministic order: the copy must equal
# an uninterrupted one, seq numbers included) and with two source replicas (the order changes
# from run to run: the copy must hold each source row exactly once).
reference = os.path.join(tmp, "inorder")
t0 = time.time()
saeflow(os.path.join(tmp, "timing"))
full = time.time() - t0
rng = random.Random(7)


def shards_listed(d):
    try:
        return len(json.load(open(os.path.join(d, "manifest.json")))["shards"])
    except (OSError, ValueError):
        return 0


def kill_loop(dst, replicas):
    killed = 0
    for i in range(12):  # until a run completes: later runs resume further each time
        before = shards_listed(dst)
        p = subprocess.Popen(cmd(dst, replicas=replicas), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Kill mid-copy: once this run has added a shard, after a random extra moment.
        t_end = time.time() + 30
        while shards_listed(dst) <= before and p.poll() is None and time.time() < t_end:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.1 * full))
        p.send_signal(signal.SIGINT if i == 2 else signal.SIGKILL)
        err = p.communicate()[1]
        check(p.returncode in (0, -9, 130), f"unexpected exit {p.returncode}: {err[-2000:]}")
        if os.path.exists(os.path.join(dst, "manifest.json")):
            subprocess.run([SAEFLOW, "shards", "inspect", dst, "--verify", "--hist-rows", "0"], check=True,
                           capture_output=True)
        if p.returncode == 0:
            break
        killed += 1
    saeflow(dst, replicas=replicas)
    print(f"full copy {full:.2f} s, {killed} interrupted runs with {replicas} source replica(s)")
    check(killed >= 3, f"only {killed} runs were interrupted")
    m, t, lab = rows(dst)
    check(m["complete"], "resumed copy incomplete")
    return t, lab


t, lab = kill_loop(os.path.join(tmp, "killed"), 1)
_, tr, labr = rows(reference)
for k in ("acts", "tokens", "doc_id", "pos", "seq"):
    check(np.array_equal(t[k], tr[k]), f"killed-and-resumed copy: column {k} differs from the uninterrupted copy")
check(np.array_equal(lab, labr), "killed-and-resumed copy: labels differ")
t, lab = kill_loop(os.path.join(tmp, "killed-replicas"), 2)
check(key(t, lab) == want, "killed-and-resumed copy with replicas: rows not each exactly once")

# An F16 directory replays as F32 (acts_dtype stored widens F16, the schema has no F16): the F32
# copy holds numpy's widening of the stored halves.
f16 = os.path.join(tmp, "f16")
run("write", f16, "--seqs", 300, "--d", D, "--dtype", "F16")
text = open(cmd(os.path.join(tmp, "f16-copy"))[2]).read()
text = text.replace(f'dir = "{src}"', f'dir = "{f16}"').replace("dtype = BF16", "dtype = F32")
open(os.path.join(tmp, "f16.sf"), "w").write(text)
p = subprocess.run([SAEFLOW, "run", os.path.join(tmp, "f16.sf"), "--no-progress"], capture_output=True, text=True)
check(p.returncode == 0, f"F16 replay failed: {p.stderr[-2000:]}")
_, a = load_dir(f16)
_, b = load_dir(os.path.join(tmp, "f16-copy"))
check(b["train"]["acts"].dtype == np.float32 and
      np.array_equal(b["train"]["acts"], a["train"]["acts"].astype(np.float32)), "F16 replay is not the widening")

# Bad parameters and directories fail cleanly, named, before any data moves: the first two already
# in the stages' checks, before anything starts (exit 2, as `saeflow check`), the split when the
# reader looks for its shards (exit 1).
for name, edit, words, code in (("dtype", ("dtype = BF16", "dtype = F64"), "F64", 2),
                                ("nodir", (f'dir = "{src}"', f'dir = "{tmp}/none"'), "manifest.json", 2),
                                ("split", ("split = train", "split = test"), "no shards of split 'test'", 1)):
    text = open(cmd(os.path.join(tmp, "bad-" + name))[2]).read().replace(*edit)
    path = os.path.join(tmp, f"bad-{name}.sf")
    open(path, "w").write(text)
    p = subprocess.run([SAEFLOW, "run", path, "--no-progress"], capture_output=True, text=True, timeout=60)
    check(p.returncode == code and words in p.stderr and "Sanitizer" not in p.stderr,
          f"bad {name}: exit {p.returncode}: {p.stderr[-2000:]}")

# The inspect command through saeflow.
p = subprocess.run([SAEFLOW, "shards", "inspect", reference, "--verify"], capture_output=True, text=True)
check(p.returncode == 0 and "verified: 0 bad shards" in p.stdout and "norms histogram" in p.stdout,
      f"inspect: {p.stdout}{p.stderr}")
print("ok")
