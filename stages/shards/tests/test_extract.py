"""Extraction with the real upstream stages: text_source -> tokenizer -> forward (two hooks, one
message per hook on one edge) -> two shard_writers, each keeping one hook (the second named as Hugging
Face's hidden_states.3, stored as resid_post.2; one F32, where any rounding difference shows, one BF16).
Each directory must hold
its own hook only, both the same tokens, documents and positions (64-token sequences, BOS dropped),
different activations; a run killed with SIGKILL at random moments and resumed must store the same
rows as an uninterrupted run, each once, bit for bit, the resumed runs forwarding only the uninterrupted
run's batches not yet stored whole (tokenizer skip_stored); another input (fewer documents, the same
documents cut into other sequences, or another corpus file) on the stored run must be refused
without changing anything, the same file at another path accepted; and (with sae_trainer built) an SAE trained on
shards replayed in order must be bit-identical to one trained live in the extraction run; and
extraction + live training interrupted (SIGINT) and resumed with skip_stored naming the shard
directory and the trainer's out_dir stores every sequence once and trains every row at most once,
as many rows as an uninterrupted run.
Usage: test_extract.py SHARDS_DRIVER SAEFLOW REPO_ROOT
Skips (77) when the suite data or the upstream stages are missing."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shardlib import check, init, load_dir, make_tmp, read_safetensors  # noqa: E402

init()
SAEFLOW, ROOT = os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
suite, corpus = os.path.join(ROOT, "data/suite"), os.path.join(ROOT, "data/corpus/debian-docs.jsonl.gz")
if not os.path.exists(os.path.join(suite, "step-000000/model.safetensors")) or not os.path.exists(corpus):
    print("skip: data/suite or data/corpus missing")
    sys.exit(77)
stages = subprocess.run([SAEFLOW, "stages", "--list"], capture_output=True, text=True).stdout
if not all(s in stages for s in ("text_source", "tokenizer", "forward")):
    print("skip: text_source, tokenizer and forward are not built here (-Dstages)")
    sys.exit(77)
tmp = make_tmp("shards-extract-")

PIPE = f"""
stage docs = text_source {{
    corpora = "{corpus}"
    label_field = lang
    id_field = id
    split = all
    max_docs = 120
}}
stage tok = tokenizer {{
    input = docs
    tokenizer = "{suite}/tokenizer.model"
    seq_len = 64
    max_seqs_per_doc = 3
    skip_stored = "DIR/l1,DIR/l2"
    skip_stored_model = "{suite}/step-000000"
    skip_stored_hooks = "resid_post.1,resid_post.2"
}}
stage fwd = forward {{
    input = tok
    model = "{suite}/step-000000"
    hooks = "resid_post.1,resid_post.2"
    out_dtype = f32
    drop_bos = true
}}
stage l1 = shard_writer {{
    input = fwd
    dir = "DIR/l1"
    hook = resid_post.1
    dtype = F32
    shard_mb = 1
    skipped_upstream = true
}}
stage l2 = shard_writer {{
    input = fwd
    dir = "DIR/l2"
    hook = hidden_states.3          # Hugging Face's name of resid_post.2
    dtype = BF16
    shard_mb = 1
    skipped_upstream = true
}}
"""


def pipeline(d):
    path = os.path.join(tmp, os.path.basename(d) + ".sf")
    open(path, "w").write(PIPE.replace("DIR", d))
    return [SAEFLOW, "run", path, "--no-progress"]


ref = os.path.join(tmp, "ref")
t0 = time.time()
p = subprocess.run(pipeline(ref), capture_output=True, text=True, timeout=600)
full = time.time() - t0
check(p.returncode == 0, f"extraction failed: {p.stderr[-3000:]}")
m1, c1 = load_dir(os.path.join(ref, "l1"))
m2, c2 = load_dir(os.path.join(ref, "l2"))
check(m1["hook"] == "resid_post.1" and m1["layer"] == 1 and m2["hook"] == "resid_post.2" and m2["layer"] == 2,
      "hook filter: wrong hooks stored")
check(m1["d"] == 192 and m1["dtype"] == "F32" and m2["dtype"] == "BF16" and m1["complete"] and m1["checkpoint"] == "step-000000", f"{m1}")
check(m1.get("corpus", "").startswith("v1:") and m1["corpus"] == m2.get("corpus"),
      f"the manifests do not record text_source's corpus fingerprint: {m1.get('corpus')} {m2.get('corpus')}")
check(set(m1["labels"]) <= {"en", "ja"} and len(m1["labels"]) == 2, f"labels {m1['labels']}")
check(set(c1) == set(c2) and len(set(c1)) >= 2, f"splits {set(c1)}")
for sp in c1:
    for k in ("tokens", "doc_id", "pos", "seq"):
        check(np.array_equal(c1[sp][k], c2[sp][k]), f"{sp}: the two hooks' {k} differ")
    check(not np.array_equal(c1[sp]["acts"], c2[sp]["acts"]), "the two hooks stored the same activations")
    # Per-token positions run on within each sequence and the BOS column is gone (T = 64).
    q = c1[sp]["seq"]
    _, counts = np.unique(q, return_counts=True)
    check(np.all(counts == 64), f"{sp}: sequences of {set(counts.tolist())} tokens, expected 64 (BOS dropped)")
rows = sum(len(c["seq"]) for c in c1.values())
print(f"extracted {rows} rows per hook in {full:.1f} s")


def batches_of(c, size=32):
    """The uninterrupted run's batches as its tokenizer cut them (batch = 32), rebuilt from its
    shards: the sequences in write order (seq), a new batch when one is full or the split changes."""
    seqs = []
    for sp, col in c.items():
        first = np.r_[True, col["seq"][1:] != col["seq"][:-1]]
        seqs += [(q, sp, (d, p)) for q, d, p in
                 zip(col["seq"][first].tolist(), col["doc_id"][first].tolist(), col["pos"][first].tolist())]
    out = []
    for _, sp, key in sorted(seqs):
        if not out or len(out[-1][1]) == size or out[-1][0] != sp:
            out.append((sp, []))
        out[-1][1].append(key)
    return [set(b) for _, b in out]


batches = batches_of(c1)

# Killed and resumed (SIGKILL at random moments, then to completion): the same rows as the
# uninterrupted run, each once, with bit-identical activations.
dst = os.path.join(tmp, "killed")
rng = random.Random(3)


def stored_in_both():
    """The sequence keys both directories hold, read from the shards."""
    both = None
    for hook in ("l1", "l2"):
        keys = set()
        if os.path.exists(os.path.join(dst, hook, "manifest.json")):
            for c in load_dir(os.path.join(dst, hook))[1].values():
                first = np.r_[True, c["seq"][1:] != c["seq"][:-1]]
                keys |= set(zip(c["doc_id"][first].tolist(), c["pos"][first].tolist()))
        both = keys if both is None else both & keys
    return both


def stored_whole():
    """The sequences of the uninterrupted run's batches that both directories hold whole."""
    both = stored_in_both()
    return sum(len(b) for b in batches if b <= both)


# SIGKILL 6 times at random moments; then (up to 6 more times, until both directories hold a whole
# batch, so the last run has something to skip even on a loaded machine, where a short run may store
# nothing before a kill) as soon as both have stored another whole batch.
killed = 0
for i in range(12):
    proc = subprocess.Popen(pipeline(dst), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if i < 6:
        time.sleep(rng.uniform(0.3, 0.8) * full)
    else:
        had, t0 = stored_whole(), time.time()
        while proc.poll() is None and stored_whole() <= had and time.time() - t0 < 60:
            time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    killed += proc.wait() != 0
    if i >= 5 and stored_whole():
        break
# The tokenizer (skip_stored) keeps the uninterrupted run's batches: it drops those both directories
# hold whole before they are computed and forwards the others whole, stored sequences included (the
# writers skip those), so the forward computes the uninterrupted run's batches and rows round as
# there. The last run forwards exactly those batches (counted independently from the shards on disk).
both, dropped = stored_in_both(), stored_whole()
p = subprocess.run(pipeline(dst), capture_output=True, text=True, timeout=600)
check(p.returncode == 0, f"resumed extraction failed: {p.stderr[-3000:]}")
check(killed >= 3, f"only {killed} runs were interrupted")


def counter(text, name):
    found = re.search(r"^\s*" + re.escape(name) + r" = (\d+)$", text, re.M)
    return int(found.group(1)) if found else 0


total = rows // 64
sent, skipped = counter(p.stderr, "tok: sequences"), counter(p.stderr, "tok: stored_sequences_skipped")
check(dropped > 0, "no batch was stored whole in both directories before the last run: the test proves nothing")
check(skipped == dropped and sent == total - dropped,
      f"the last run forwarded {sent} and skipped {skipped} of {total} sequences; {len(both)} were stored in both, "
      f"{dropped} of them in batches stored whole")
print(f"last run: {skipped} stored sequences skipped before the forward pass (whole batches), {sent} forwarded, "
      f"{len(both) - dropped} of them stored already")
for hook in ("l1", "l2"):
    _, a = load_dir(os.path.join(ref, hook))
    _, b = load_dir(os.path.join(dst, hook))
    for sp in a:
        ka = {(d, p): i for i, (d, p) in enumerate(zip(a[sp]["doc_id"].tolist(), a[sp]["pos"].tolist()))}
        idx = [ka.get(k, -1) for k in zip(b[sp]["doc_id"].tolist(), b[sp]["pos"].tolist())]
        check(len(idx) == len(ka) and min(idx) >= 0 and len(set(idx)) == len(idx),
              f"{hook} {sp}: resumed rows are not the uninterrupted run's rows, each once")
        check(np.array_equal(b[sp]["acts"], a[sp]["acts"][idx]), f"{hook} {sp}: resumed activations differ")
print(f"{killed} interrupted runs, resumed to the same rows")

# Another input (fewer documents) on the stored run: the tokenizer refuses it, nothing changes.
before = {h: open(os.path.join(dst, h, "manifest.json"), "rb").read() for h in ("l1", "l2")}
short = pipeline(dst)
open(short[2], "w").write(PIPE.replace("DIR", dst).replace("max_docs = 120", "max_docs = 60"))
p = subprocess.run(short, capture_output=True, text=True, timeout=600)
check(p.returncode != 0 and "not the input of the stored run" in p.stderr, f"a shorter input was accepted: {p.stderr}")
check(all(open(os.path.join(dst, h, "manifest.json"), "rb").read() == before[h] for h in before),
      "a refused input changed a manifest")

# The same corpus cut into other sequences (seq_len 48): sequences at the stored keys hold other
# tokens. The tokenizer (skip_stored) refuses at the first one, before anything is forwarded; without
# skip_stored the writers refuse the first one that arrives. Nothing changes either way.
other = PIPE.replace("DIR", dst).replace("seq_len = 64", "seq_len = 48")
for what, text, want in (("tokenizer", other, "other tokens under this key"),
                         ("writer", other.replace('    skip_stored = "DIR/l1,DIR/l2"\n'.replace("DIR", dst), "")
                          .replace("    skipped_upstream = true\n", ""), "refusing to mix runs")):
    open(short[2], "w").write(text)
    p = subprocess.run(short, capture_output=True, text=True, timeout=600)
    check(p.returncode != 0 and want in p.stderr and "never" not in p.stderr,
          f"{what}: another tokenization of the stored sequences was not refused at once: {p.stderr[-2000:]}")
    check(all(open(os.path.join(dst, h, "manifest.json"), "rb").read() == before[h] for h in before),
          f"{what}: a refused input changed a manifest")

# Another corpus (the same file without its first ten documents) on the stored run: the
# tokenizer (skip_stored) refuses it at the first document, by the corpus fingerprint the
# manifests record; without skip_stored the writers refuse the first batch. Nothing changes. The
# same corpus file at another path is the same corpus: the run succeeds and stores nothing new.
import gzip  # noqa: E402
import shutil  # noqa: E402
lines = gzip.open(corpus, "rb").read().splitlines(keepends=True)
other_corpus, moved_corpus = os.path.join(tmp, "other.jsonl.gz"), os.path.join(tmp, "moved", "docs.jsonl.gz")
with gzip.open(other_corpus, "wb") as f:
    f.write(b"".join(lines[10:]))
os.makedirs(os.path.dirname(moved_corpus))
shutil.copy(corpus, moved_corpus)
other = PIPE.replace("DIR", dst).replace(corpus, other_corpus)
for what, text, want in (("tokenizer", other, f"skip_stored: {dst}/l1 holds sequences of the corpus"),
                         ("writer", other.replace('    skip_stored = "DIR/l1,DIR/l2"\n'.replace("DIR", dst), "")
                          .replace("    skipped_upstream = true\n", ""), "refusing to mix runs")):
    open(short[2], "w").write(text)
    p = subprocess.run(short, capture_output=True, text=True, timeout=600)
    check(p.returncode != 0 and want in p.stderr and "holds sequences of the corpus" in p.stderr,
          f"{what}: another corpus on the stored run was not refused at once: {p.stderr[-2000:]}")
    check(all(open(os.path.join(dst, h, "manifest.json"), "rb").read() == before[h] for h in before),
          f"{what}: a refused corpus changed a manifest")
open(short[2], "w").write(PIPE.replace("DIR", dst).replace(corpus, moved_corpus))
p = subprocess.run(short, capture_output=True, text=True, timeout=600)
after = {h: json.load(open(os.path.join(dst, h, "manifest.json"))) for h in ("l1", "l2")}
check(p.returncode == 0 and all(after[h]["count"] == json.loads(before[h])["count"] for h in before),
      f"the same corpus at another path was not taken as the stored run's: {p.stderr[-2000:]}")

# The stored directories resumed with another checkpoint's settings (the forward and skip_stored_model
# on step-000010), or without one of their hooks: the tokenizer refuses before skipping anything
# (it used to drop every stored sequence, write 0 rows and exit 0). Nothing changes.
ckpt_b = os.path.join(suite, "step-000010")
for what, text, want in (("checkpoint", PIPE.replace("DIR", dst).replace(f"{suite}/step-000000", ckpt_b),
                          f"skip_stored: {dst}/l1 holds activations of model {suite}/step-000000, but this run "
                          f"computes model {ckpt_b}"),
                         ("hook", PIPE.replace("DIR", dst).replace('"resid_post.1,resid_post.2"', '"resid_post.1"'),
                          f"skip_stored: {dst}/l2 holds activations of hook resid_post.2, but this run computes "
                          "hook resid_post.1")):
    open(short[2], "w").write(text)
    p = subprocess.run(short, capture_output=True, text=True, timeout=600)
    check(p.returncode != 0 and want in p.stderr and "dropped" not in p.stderr,
          f"another {what} on the stored run was not refused before skipping: {p.stderr[-2000:]}")
    check(all(open(os.path.join(dst, h, "manifest.json"), "rb").read() == before[h] for h in before),
          f"another {what}: a refused run changed a manifest")

# Extract once, train apart: an SAE trained live on forward's output and one trained on the shards
# written in the same run (replayed in order) must be bit-identical.
if "sae_trainer" not in stages:
    print("note: sae_trainer not built here; live-vs-replay SAE check skipped")
    print("ok")
    sys.exit(0)
SAE = """
stage sae = sae_trainer {{
    input = {src}
    out_dir = "{out}"
    latents = 256
    k = 8
    batch = 1024
    warmup_steps = 5
    split = train
    checkpoint_every = 0
}}
"""
upstream = PIPE.split("stage l1 = shard_writer")[0].replace('"resid_post.1,resid_post.2"', "resid_post.2")
upstream = upstream.replace("out_dtype = f32", "out_dtype = bf16")  # the live SAE sees what the BF16 shards hold
KEEP = 'stage keep = shard_writer {{\n    input = fwd\n    dir = "{dir}"\n    dtype = BF16\n{extra}}}\n'
live = upstream.replace('    skip_stored = "DIR/l1,DIR/l2"\n', "") + SAE.format(src="fwd", out=os.path.join(tmp, "sae-live"))
live += KEEP.format(dir=f"{tmp}/sae-shards", extra="")
replay = f'stage acts = shard_source {{\n    dir = "{tmp}/sae-shards"\n    split = train\n}}\n'
replay += SAE.format(src="acts", out=os.path.join(tmp, "sae-replay"))
for name, text in (("live", live), ("replay", replay)):
    open(os.path.join(tmp, name + ".sf"), "w").write(text)
    p = subprocess.run([SAEFLOW, "run", os.path.join(tmp, name + ".sf"), "--no-progress"], capture_output=True,
                       text=True, timeout=600)
    check(p.returncode == 0, f"{name} SAE training failed: {p.stderr[-3000:]}")
a, _ = read_safetensors(os.path.join(tmp, "sae-live", "model.safetensors"))
b, _ = read_safetensors(os.path.join(tmp, "sae-replay", "model.safetensors"))
check(a.keys() == b.keys() and len(a) >= 4, f"SAE tensors {list(a)} / {list(b)}")
for k in a:
    check(np.array_equal(a[k][1], b[k][1]), f"SAE trained from shards differs from the live one in {k}")
print(f"SAE trained on shards == SAE trained live ({', '.join(a)})")

# Extraction and training at once, interrupted (SIGINT: the trainer checkpoints, the writer keeps its
# whole sequences) and resumed with skip_stored naming both: the tokenizer drops only what both hold,
# each keeps what it has; at the end the shards hold every sequence once and the trainer trained
# every train row at most once, as many as an uninterrupted run.
sh, sae = os.path.join(tmp, "both-shards"), os.path.join(tmp, "both-sae")
both_pipe = upstream.replace('"DIR/l1,DIR/l2"', f'"{sh},{sae}"')
both_pipe += SAE.format(src="fwd", out=sae).replace("checkpoint_every = 0", "checkpoint_every = 0\n    resume = true")
both_pipe += KEEP.format(dir=sh, extra="    skipped_upstream = true\n")
open(os.path.join(tmp, "both.sf"), "w").write(both_pipe)
stopped = 0
for i in range(3):
    proc = subprocess.Popen([SAEFLOW, "run", os.path.join(tmp, "both.sf"), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.4, 0.7) * full)
    proc.send_signal(signal.SIGINT)
    stopped += proc.wait() != 0
p = subprocess.run([SAEFLOW, "run", os.path.join(tmp, "both.sf"), "--no-progress"], capture_output=True, text=True,
                   timeout=600)
check(p.returncode == 0 and stopped >= 1, f"resumed extraction + training failed ({stopped} stopped): {p.stderr[-3000:]}")
held = re.search(r"skip_stored: " + re.escape(sae) + r" holds (\d+) sequences", p.stderr)
check(held is not None, "the tokenizer did not read the trainer's checkpoint as a store")
_, c = load_dir(sh)
_, ref_c = load_dir(os.path.join(tmp, "sae-shards"))
for sp in ref_c:
    got = sorted(zip(c[sp]["doc_id"].tolist(), c[sp]["pos"].tolist()))
    check(got == sorted(zip(ref_c[sp]["doc_id"].tolist(), ref_c[sp]["pos"].tolist())),
          f"{sp}: the resumed shards are not the uninterrupted run's rows, each once")
t, _ = read_safetensors(os.path.join(sae, "checkpoint.safetensors"))
tr = t["trained_rows"][1]
first = np.r_[True, ref_c["train"]["seq"][1:] != ref_c["train"]["seq"][:-1]]
train_keys = set(zip(ref_c["train"]["doc_id"][first].tolist(), ref_c["train"]["pos"][first].tolist()))
ref_tokens = json.load(open(os.path.join(tmp, "sae-live", "config.json")))["saeflow_training"]["tokens"]
tokens = json.load(open(os.path.join(sae, "config.json")))["saeflow_training"]["tokens"]
check(tr.max() <= 64 and set(zip(t["trained_doc"][1].tolist(), t["trained_pos"][1].tolist())) <= train_keys,
      "a row trained twice, or a sequence not of the train split")
check(tokens == ref_tokens and int(tr.sum()) >= tokens,
      f"the resumed trainer trained {tokens} rows, the uninterrupted one {ref_tokens}")
print(f"extraction + training, {stopped} interrupted runs, resumed ({held.group(1)} trained sequences, "
      f"{counter(p.stderr, 'tok: stored_sequences_skipped')} skipped by the tokenizer): shards complete, "
      "every row trained at most once")
print("ok")
