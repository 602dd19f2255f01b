"""Round trip: the writer's shards, read by numpy with our own parser of the safetensors layout,
hold exactly the input (F32 bit-exact; BF16 and F16 equal to torch's and numpy's own round to
nearest even); the reader re-forms the stored sequences in order and shuffles every row exactly
once per epoch. Usage: test_roundtrip.py SHARDS_DRIVER"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shardlib import (check, expected_rows, formula_acts, init, load_dir, make_tmp,  # noqa: E402
                      read_dump, read_safetensors, run, stream)

init()
tmp = make_tmp("shards-rt-")
NSEQ = 300


def check_columns(got, want, what, acts_bits=None):
    for k in ("tokens", "doc_id", "pos", "seq"):
        check(np.array_equal(got[k], want[k]), f"{what}: column {k} differs")
    check(np.array_equal(np.array(labels)[got["label"]], want["label"]), f"{what}: labels differ")
    if acts_bits is None:
        check(np.array_equal(got["acts"].view(np.uint32), want["acts"].view(np.uint32)), f"{what}: acts differ")
    else:
        check(np.array_equal(got["acts"], acts_bits), f"{what}: acts differ from the reference rounding")


# 1. F32, formula stream, two splits, many small shards: every column, the manifest's sums.
d = 16
dir1 = os.path.join(tmp, "f32")
run("write", dir1, "--seqs", NSEQ, "--d", d, "--shard-kb", 4)
m, cols = load_dir(dir1)
labels = m["labels"]
check(m["complete"] and m["dtype"] == "F32" and m["d"] == d and m["hook"] == "resid_post.3" and m["layer"] == 3,
      f"manifest identity {m}")
check(m["sequences"] == NSEQ and m["count"] == sum(q["T"] for q in stream(NSEQ)), "manifest totals")
check(len(m["shards"]) > 10, "expected many shards")
for split in ("train", "validation"):
    want = expected_rows(NSEQ, d, split)
    check_columns(cols[split], want, f"f32 {split}")
    norms = np.linalg.norm(want["acts"].astype(np.float64), axis=1)
    got = sum(s["norm_sum"] for s in m["shards"] if s["split"] == split)
    check(abs(got - norms.sum()) <= 1e-9 * norms.sum(), f"norm sum {got} vs numpy {norms.sum()}")
    check(abs(m["splits"][split]["norm_mean"] - norms.mean()) <= 1e-9 * norms.mean(), "split norm_mean")
# inspect: the mean norm, and a histogram of norms sampled every ceil(n / 50)-th row (manifest order).
p = run("cmd", "inspect", dir1, "--hist-rows", 50)
allrows = np.concatenate([read_safetensors(os.path.join(dir1, s["file"]))[0]["acts"][1] for s in m["shards"]])
norms = np.linalg.norm(allrows.astype(np.float64), axis=1)
sample = norms[:: -(-len(norms) // 50)]
line = [x for x in p.stdout.splitlines() if x.startswith("mean norm")][0]
check(abs(float(line.split()[2]) - norms.mean()) <= 1e-5 * norms.mean(), f"inspect mean norm: {line}")
bins = [x for x in p.stdout.splitlines() if x.startswith("  [")]
counts = [int(x.split(")")[1].split()[0]) for x in bins]
edges = [float(x.split(",")[0].strip(" [")) for x in bins]
check(len(bins) == 20 and sum(counts) == len(sample), f"histogram of {sum(counts)} rows, sampled {len(sample)}")
check(abs(edges[0] - sample.min()) <= 1e-3 * sample.max(), f"histogram starts at {edges[0]}, min {sample.min()}")
check(counts[0] >= 1 and counts[-1] >= 1, "the extreme bins hold the min and the max")

# Each shard holds whole sequences, and its manifest entry says which.
sh = m["shards"][0]
t, meta = read_safetensors(os.path.join(dir1, sh["file"]))
q = t["seq"][1]
check(q[0] == sh["first_seq"] and q[-1] == sh["last_seq"] and len(np.unique(q)) == sh["sequences"], "shard seq range")
check(meta["labels"] == '["ja","en"]' or meta["labels"] == '["en","ja"]', f"labels metadata {meta['labels']}")
try:  # the Hugging Face reader, when installed, must agree
    from safetensors.numpy import load_file

    hf = load_file(os.path.join(dir1, sh["file"]))
    check(np.array_equal(hf["acts"], t["acts"][1]), "safetensors.numpy disagrees")
except ImportError:
    print("note: python3-safetensors not installed; checked with our own parser only")

# 2. In order: whole sequences re-formed, same-length runs batched, stored order.
dump = os.path.join(tmp, "inorder.bin")
run("read", dir1, "--split", "validation", "--batch-seqs", 3, "--out", dump)
batches = read_dump(dump, d)
want_seqs = [q for q in stream(NSEQ) if q["split"] == "validation"]
got_seqs = []
for b in batches:
    check(1 <= b["B"] <= 3, f"batch of {b['B']} sequences")
    for i in range(b["B"]):
        got_seqs.append((b["seq"][i], b["T"], b["doc_id"][i], b["pos"][i], labels[b["label"][i]], b["tokens"][i], b["acts"][i]))
check(len(got_seqs) == len(want_seqs), f"{len(got_seqs)} sequences read, {len(want_seqs)} written")
for g, w in zip(got_seqs, want_seqs):
    check(g[0] == w["seq"] and g[1] == w["T"] and g[2] == w["doc"] and g[3] == w["pos"] and g[4] == w["label"],
          f"sequence {w['seq']} re-formed wrong: {g[:5]}")
    check(np.array_equal(g[5], w["tokens"]) and np.array_equal(g[6], formula_acts(w["seq"], w["T"], d)),
          f"sequence {w['seq']} tokens/acts")

# 3. Shuffled: each row exactly once per epoch, epochs differ, seeded, parts disjoint.
def shuffled(seed, epochs=2, part=0, parts=1, batch=37):
    out = os.path.join(tmp, f"sh-{seed}-{part}.bin")
    run("read", dir1, "--shuffle", "--buffer-rows", 100, "--batch-rows", batch, "--epochs", epochs, "--seed", seed,
        "--part", part, "--parts", parts, "--out", out)
    return read_dump(out, d)


want = expected_rows(NSEQ, d, "train")
key_all = sorted(zip(want["seq"].tolist(), want["pos"].tolist()))
acts_by_key = {k: a for k, a in zip(zip(want["seq"].tolist(), want["pos"].tolist()), want["acts"])}
b1 = shuffled(7)
orders = []
for ep in (0, 1):
    rows = [(int(b["seq"][i]), int(b["pos"][i]), b["acts"][i, 0], int(b["doc_id"][i])) for b in b1 if b["epoch"] == ep
            for i in range(b["B"])]
    check(all(b["T"] == 1 and b["B"] <= 37 for b in b1), "shuffled batches must be [N<=37, 1, d]")
    keys = [(r[0], r[1]) for r in rows]
    check(sorted(keys) == key_all, f"epoch {ep}: rows not exactly once")
    check(all(np.array_equal(r[2], acts_by_key[(r[0], r[1])]) for r in rows), f"epoch {ep}: a row's acts moved")
    orders.append(keys)
check(orders[0] != key_all and orders[0] != orders[1], "shuffle did not change the order")
# Displacement: a buffer of 100 rows over ~1300 rows must move rows far from home.
rank = {k: i for i, k in enumerate(key_all)}
disp = np.abs(np.array([rank[k] for k in orders[0]]) - np.arange(len(key_all)))
check(disp.mean() > 20, f"mean displacement {disp.mean()} too small for a shuffle")
b1b = shuffled(7)
check(all(np.array_equal(x["seq"], y["seq"]) and np.array_equal(x["pos"], y["pos"]) for x, y in zip(b1, b1b)),
      "same seed, different order")
# The exact stream, against an independent model of the documented algorithm (stages/shards/README.md:
# xoshiro256** seeded through splitmix64, shards permuted by Fisher-Yates every epoch, a buffer of
# 100 rows from which each row is drawn uniformly and replaced by the next input row, drained at the
# end of an epoch): a seed gives the same rows in the same order whatever the buffer stores.
M64 = (1 << 64) - 1


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Xoshiro:
    def __init__(self, seed, part):
        x, self.s = seed ^ ((0x632be59bd9b4e019 * (part + 1)) & M64), []
        for _ in range(4):
            x = (x + 0x9e3779b97f4a7c15) & M64
            z = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M64
            z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
            self.s.append(z ^ (z >> 31))

    def next(self):
        s = self.s
        r, t = (rotl((s[1] * 5) & M64, 7) * 9) & M64, (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return r

    def below(self, n):  # Lemire's unbiased bounded draw
        m = self.next() * n
        if (m & M64) < n:
            while (m & M64) < (-n) % n:
                m = self.next() * n
        return m >> 64


def model_stream(seed, epochs, buffer_rows, batch):
    rng, batches = Xoshiro(seed, 0), []
    shard_rows, start = [], 0
    for sh in m["shards"]:
        if sh["split"] == "train":
            keys = list(zip(cols["train"]["seq"][start:start + sh["count"]].tolist(), cols["train"]["pos"][start:start + sh["count"]].tolist()))
            shard_rows.append(keys)
        start += sh["count"] if sh["split"] == "train" else 0
    for _ in range(epochs):
        order = list(range(len(shard_rows)))
        for i in range(len(order), 1, -1):
            j = rng.below(i)
            order[i - 1], order[j] = order[j], order[i - 1]
        rows = iter([k for o in order for k in shard_rows[o]])
        buf = []
        for k in rows:
            if len(buf) == buffer_rows:
                break
            buf.append(k)
        else:
            k = None
        pending = k  # the first row not yet in the buffer
        while buf:
            out = []
            while len(out) < batch and buf:
                i = rng.below(len(buf))
                out.append(buf[i])
                if pending is not None:
                    buf[i], pending = pending, next(rows, None)
                else:
                    buf[i] = buf[-1]
                    buf.pop()
            batches.append(out)
    return batches


model = model_stream(7, 2, 100, 37)
got = [list(zip(b["seq"].tolist(), b["pos"].tolist())) for b in b1]
check(got == model, f"shuffled stream equals the model of its algorithm ({len(got)} vs {len(model)} batches)")

b2 = shuffled(8)
check(any(not np.array_equal(x["seq"], y["seq"]) for x, y in zip(b1, b2)), "seed has no effect")
p0, p1 = shuffled(3, 1, 0, 2), shuffled(3, 1, 1, 2)
k0 = [(int(b["seq"][i]), int(b["pos"][i])) for b in p0 for i in range(b["B"])]
k1 = [(int(b["seq"][i]), int(b["pos"][i])) for b in p1 for i in range(b["B"])]
check(k0 and k1 and not set(k0) & set(k1) and sorted(k0 + k1) == key_all, "parts not disjoint or not covering")

# 4. BF16 / F16 rounding against numpy's and torch's conversions, on random data with edge cases.
rng = np.random.default_rng(1)
d = 24
x = (rng.standard_normal((500, d)) * np.exp(rng.uniform(-30, 12, (500, 1)))).astype(np.float32)
edge = np.array([0.0, -0.0, 1e-45, -1e-40, 6e-8, 3e-8, 65504.0, 65520.0, 70000.0, -1e6, np.inf, -np.inf,
                 1.00390625, 1.01171875, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 3.4e38, 2.0**-14, 2.0**-24, 5.9604645e-08,
                 np.float32(1.0) + np.float32(2.0**-23), 0.1, -0.3, np.nan], np.float32)
x[0, :] = edge
x[1, :] = -edge
inp = os.path.join(tmp, "input.f32")
x.tofile(inp)

refs = {
    "F32": x.view(np.uint32),
    "F16": x.astype(np.float16).view(np.uint16),  # overflow to inf is the point
    "BF16": torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16),
}
for dt, ref in refs.items():
    dd = os.path.join(tmp, dt)
    run("write", dd, "--seqs", NSEQ, "--d", d, "--dtype", dt, "--input", inp, "--shard-kb", 16)
    m, cols = load_dir(dd)
    check(m["dtype"] == dt, f"{dt}: manifest dtype {m['dtype']}")
    # Rows 0 and 1 hold a NaN: the norm sums of their shards are not finite, written as null.
    check(m["shards"][0]["norm_sum"] is None and m["norm_mean"] is None, "non-finite norm sums must be null")
    labels = m["labels"]
    for split in ("train", "validation"):
        w = expected_rows(NSEQ, d, split, input_rows=np.arange(len(x)))
        want_bits = ref[w["acts"]]  # acts holds row indices into x here
        got = cols[split]["acts"]
        got_bits = got.view(np.uint32 if dt == "F32" else np.uint16)
        # NaN stays NaN; its payload is not part of the contract (torch 1.13 makes every bf16 NaN 0xffff).
        nan = np.isnan(x[w["acts"]])
        wide = got_bits.astype(np.uint32) << (0 if dt == "F32" else 16) if dt != "F16" else None
        got_nan = np.isnan(got.astype(np.float32)) if dt == "F16" else np.isnan(wide.view(np.float32))
        check((nan.any() or split != "train") and np.array_equal(got_nan, nan), f"{dt} {split}: NaN not kept as NaN")
        check(np.array_equal(got_bits[~nan], want_bits[~nan]), f"{dt} {split}: stored bits differ from the reference rounding")
    # Reading back widens exactly: the reader's f32 equals numpy's widening of the stored values.
    dump = os.path.join(tmp, f"{dt}.bin")
    run("read", dd, "--batch-seqs", 64, "--out", dump)
    got = np.concatenate([b["acts"].reshape(-1, d) for b in read_dump(dump, d)])
    stored = cols["train"]["acts"]
    widened = {"F32": stored, "F16": stored.astype(np.float32),
               "BF16": (stored.astype(np.uint32) << 16).view(np.float32)}[dt]
    check(np.array_equal(got.view(np.uint32), widened.view(np.uint32)), f"{dt}: read-back differs from widening")
    print(f"{dt}: {sum(s['count'] for s in m['shards'])} rows round-tripped")

# 5. BF16 input stored as F32 (exact widening) and as BF16 (bit-exact copy).
for dt in ("F32", "BF16"):
    dd = os.path.join(tmp, "in-bf16-" + dt)
    run("write", dd, "--seqs", 50, "--d", d, "--dtype", dt, "--in-dtype", "BF16", "--input", inp)
    m, cols = load_dir(dd)
    w = expected_rows(50, d, "train", input_rows=np.arange(len(x)))
    bf = refs["BF16"][w["acts"]]
    got = cols["train"]["acts"]
    want = bf if dt == "BF16" else (bf.astype(np.uint32) << 16).view(np.float32)
    ok = ~np.isnan(x[w["acts"]])  # NaN payloads aside (see above)
    check(np.array_equal(got.view(np.uint16 if dt == "BF16" else np.uint32)[ok],
                         want.view(np.uint16 if dt == "BF16" else np.uint32)[ok]), f"bf16 input stored as {dt}")
print("ok")
