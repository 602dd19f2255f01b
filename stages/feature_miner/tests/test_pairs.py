#!/usr/bin/python3
"""Cross-lingual (pairs) against an independent reference, through the stage (fm_drive).

Fixture: a bilingual corpus of 60 en/ja translation pairs plus unpaired documents, and an SAE whose
decoder directions are orthonormal, so the activations choose exactly which latents fire. Planted:
  0  on both sides of 30 pairs (in a later sequence of a section too)  -> cross-lingual
  1  on the English side of 30 pairs only                              -> language-specific, untested
  2  on the Japanese side of 30 pairs only                             -> language-specific, untested
  3  on each side independently at random (rate 0.5)                   -> not cross-lingual
  4  on every section                                                  -> tested, p = 1
  5  on both sides of 12 pairs, on one side alone of 20 more           -> weak, not cross-lingual
  6  on both sides of 10 pairs, nowhere else                           -> cross-lingual
  7  on unpaired documents only                                        -> alive, untested
  8  never                                                             -> dead
  9  at a token both sides of 30 pairs contain (a command copied into  -> cross-lingual over all
     the translation), nowhere else                                        tokens only
One pair has only its English side in the stream (sides_mined_alone). English sections take their
tokens from one range, Japanese from another; the shared token (id 7) is in both sides of those
30 pairs, and no other latent is planted on it.

The reference (numpy and Python's exact integers): the SAE's encoding (x / ||x||, ReLU, top-k) of
the same activations, each section's maximum over its tokens that no paired section of the other
language contains (and over all its tokens), fire counts, the co-firing count C, the permuted
counts under the same seeded permutations (the generator re-written here from fm_pairs.c's
comment), their mean, sd, 99.9th percentile and empirical p, the exact hypergeometric tail from
math.comb, and the Bonferroni rule. The C output must match it (counts exactly, reals to the files' 9 digits
relative); the planted features must come out as planted; the permutation mean must agree with
the exact null mean a b / n. Then `saeflow report` shows the share. Errors: a corpus without pairs,
a stream with both sides of no pair, a stream with too few pairs, inconsistent pairs.
usage: test_pairs.py FM_DRIVE
"""
import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import msgpack
import msgpack_numpy
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
import safetensors_np  # noqa: E402

D, N, K, T = 16, 12, 6, 8
N_PAIRS, PERMS, SEED, ALPHA = 60, 500, 7, 0.01
M64 = (1 << 64) - 1
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def doc_hash(label, key):
    """text_source's doc_id: 63-bit FNV-1a of label NUL key (stages/text_source/README.md)."""
    h = 1469598103934665603
    for b in label.encode() + b"\0" + key.encode():
        h = ((h ^ b) * 1099511628211) & M64
    return h & 0x7FFFFFFFFFFFFFFF


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def permutation(seed, index, n):
    """fm_pairs_permutation as its comment in fm_pairs.c describes it."""
    def h(z):
        return mix((z + 0x9E3779B97F4A7C15) & M64)
    s = h(h(seed) ^ index)
    pi = list(range(n))
    for i in range(n - 1, 0, -1):
        s = (s + 0x9E3779B97F4A7C15) & M64
        j = mix(s) % (i + 1)
        pi[i], pi[j] = pi[j], pi[i]
    return pi


def hyper_tail(n, a, b, c):
    hi = min(a, b)
    return sum(math.comb(a, x) * math.comb(n - a, b - x) for x in range(c, hi + 1)) / math.comb(n, b)


def make(tmp, rng):
    """SAE, corpus and messages; returns the planted firing plan per document."""
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    W_dec = q.T[:N].astype(np.float32)  # orthonormal rows
    sae_dir = os.path.join(tmp, "sae")
    os.makedirs(sae_dir)
    with open(os.path.join(sae_dir, "config.json"), "w") as f:
        json.dump({"d_in": D, "num_latents": N, "k": K, "model_type": "topk_sae"}, f)
    safetensors_np.write(os.path.join(sae_dir, "model.safetensors"),
                         {"encoder.weight": W_dec.copy(), "encoder.bias": np.full(N, -0.05, np.float32),
                          "decoder.weight": W_dec.T.copy(), "b_dec": np.zeros(D, np.float32)})
    # plan[(pair, side)] = set of latents that fire in that section
    plan = {(p, s): set() for p in range(N_PAIRS) for s in (0, 1)}
    order = rng.permutation(N_PAIRS)
    for p in order[:30]:
        plan[(p, 0)].add(0), plan[(p, 1)].add(0)
    for p in rng.permutation(N_PAIRS)[:30]:
        plan[(p, 0)].add(1)
    for p in rng.permutation(N_PAIRS)[:30]:
        plan[(p, 1)].add(2)
    for key in plan:
        if rng.random() < 0.5:
            plan[key].add(3)
        plan[key].add(4)
    sh = rng.permutation(N_PAIRS)
    for p in sh[:12]:
        plan[(p, 0)].add(5), plan[(p, 1)].add(5)
    for p in sh[12:22]:
        plan[(p, 0)].add(5)
    for p in sh[22:32]:
        plan[(p, 1)].add(5)
    for p in rng.permutation(N_PAIRS)[:10]:
        plan[(p, 0)].add(6), plan[(p, 1)].add(6)
    code = set(int(p) for p in rng.permutation(N_PAIRS)[:30])
    for p in code:
        plan[(p, 0)].add(9), plan[(p, 1)].add(9)
    rows, docs = [], []  # docs: (doc_id, label, latents, pair index or -1, side)
    for p in range(N_PAIRS):
        en, ja = f"man/en/page{p}.1", f"man/ja/page{p}.1"
        rows.append({"id": en, "lang": "en", "text": "x", "pair": ja, "split": "train"})
        rows.append({"id": ja, "lang": "ja", "text": "x", "pair": en, "split": "train"})
        docs.append((doc_hash("en", en), "en", plan[(p, 0)], p, 0, p in code))
        if p != N_PAIRS - 1:  # the last pair's Japanese side is not mined
            docs.append((doc_hash("ja", ja), "ja", plan[(p, 1)], p, 1, p in code))
    for u in range(8):
        lang = "en" if u % 2 else "ja"
        rows.append({"id": f"solo/{u}", "lang": lang, "text": "x", "pair": None, "split": "test"})
        docs.append((doc_hash(lang, f"solo/{u}"), lang, {7, 4}, -1, 0, False))
    corpus = os.path.join(tmp, "corpus.jsonl.gz")
    with gzip.open(corpus, "wt") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    # Sequences: 1-3 per document, tokens of the language's range (en 100-149, ja 200-249), the
    # shared token 7 at the first position of every sequence of a "code" pair's sides. A latent of
    # the plan is planted on one random language token of one random sequence of the section
    # (latent 0 also in the last), latent 9 on the shared token; noise elsewhere.
    seqs = []  # (doc_id, label, pos, acts [T, D], tokens [T])
    for doc, label, lats, p, side, shared in docs:
        n_seq = int(rng.integers(1, 4))
        acts = rng.standard_normal((n_seq, T, D)).astype(np.float32) * 0.002 + q.T[N] * 0.5  # a direction no latent reads
        toks = rng.integers(100, 150, (n_seq, T)) + (100 if label == "ja" else 0)
        if shared:
            toks[:, 0] = 7
        for lat in lats:
            for s in {int(rng.integers(0, n_seq))} | ({n_seq - 1} if lat == 0 else set()):
                acts[s, 0 if lat == 9 else int(rng.integers(1 if shared else 0, T))] += W_dec[lat] * (1.0 + rng.random())
        for s in range(n_seq):
            seqs.append((doc, label, s * T, acts[s], toks[s].astype(np.int32)))
    order = rng.permutation(len(seqs))  # the stream interleaves documents
    msgs = os.path.join(tmp, "acts.bin")
    with open(msgs, "wb") as f:
        for b0 in range(0, len(order), 5):
            idx = order[b0:b0 + 5]
            msg = {"acts": np.stack([seqs[i][3] for i in idx]).astype(np.float32),  # MESSAGES.md: f32 or bf16
                   "tokens": np.stack([seqs[i][4] for i in idx]),
                   "doc_id": np.array([seqs[i][0] for i in idx], np.int64),
                   "pos": np.array([seqs[i][2] for i in idx], np.int32), "label": [seqs[i][1] for i in idx],
                   "split": "train", "hook": "resid_post.1", "layer": 1, "model": "fixture", "checkpoint": "step1"}
            blob = msgpack.packb(msg, default=msgpack_numpy.encode, use_bin_type=True)
            f.write(struct.pack("<I", len(blob)) + blob)
    return sae_dir, corpus, msgs, seqs, docs, W_dec


def reference(seqs, docs, W_dec):
    """numpy: encode, section maxima, the statistic, the permutation null, the exact tail, the rule."""
    dense_of, toks_of = {}, {}  # per document: [tokens, N] top-k outputs and [tokens] ids
    for doc, label, pos, acts, toks in seqs:
        x = acts / np.linalg.norm(acts, axis=1, keepdims=True)
        pre = np.maximum(x @ W_dec.T - 0.05, 0)
        top = np.argsort(-pre, axis=1, kind="stable")[:, :K]
        dense = np.zeros_like(pre)
        np.put_along_axis(dense, top, np.take_along_axis(pre, top, 1), 1)
        dense_of.setdefault(doc, []).append(dense)
        toks_of.setdefault(doc, []).append(toks)
    dense_of = {d: np.concatenate(v) for d, v in dense_of.items()}
    toks_of = {d: np.concatenate(v) for d, v in toks_of.items()}
    side_doc = {}
    for doc, label, lats, p, side, shared in docs:
        if p >= 0:
            side_doc[(p, side)] = doc
    # section maxima over the tokens no paired section of the other language has, and over all
    lang_toks = [np.concatenate([toks_of[d] for (p, s), d in side_doc.items() if s == side]) for side in (0, 1)]
    enc, enc_all = {}, {}
    for (p, side), doc in side_doc.items():
        enc_all[(p, side)] = dense_of[doc].max(axis=0)
        keep = ~np.isin(toks_of[doc], lang_toks[1 - side])
        enc[(p, side)] = dense_of[doc][keep].max(axis=0) if keep.any() else np.zeros(N, np.float32)
    # in fm_pairs' order: by the English side's id, byte order (page10 before page2)
    mined = sorted((p for p in range(N_PAIRS) if (p, 0) in side_doc and (p, 1) in side_doc), key=lambda p: f"man/en/page{p}.1")
    A = np.array([enc[(p, 0)] > 0 for p in mined])
    B = np.array([enc[(p, 1)] > 0 for p in mined])
    n = len(mined)
    a, b, C = A.sum(0), B.sum(0), (A & B).sum(0)
    LA = np.array([enc_all[(p, 0)] > 0 for p in mined])
    LB = np.array([enc_all[(p, 1)] > 0 for p in mined])
    la, lb, lC = LA.sum(0), LB.sum(0), (LA & LB).sum(0)
    thr_all = ALPHA / ((la > 0) & (lb > 0)).sum()
    null = np.array([(A & B[permutation(SEED, r, n)]).sum(0) for r in range(PERMS)])  # [PERMS, N]
    tested = (a > 0) & (b > 0)
    thr = ALPHA / tested.sum()
    ref = []
    for f in range(N):
        col = np.sort(null[:, f])
        p_exact = hyper_tail(n, int(a[f]), int(b[f]), int(C[f]))
        ref.append({"a": int(a[f]), "b": int(b[f]), "both": int(C[f]), "tested": bool(tested[f]),
                    "null_mean": col.mean(), "null_sd": col.std(), "null_q999": col[math.ceil(0.999 * PERMS) - 1],
                    "p_perm": (1 + (col >= C[f]).sum()) / (PERMS + 1), "p_exact": p_exact,
                    "cross": bool(tested[f]) and p_exact <= thr, "expected": a[f] * b[f] / n,
                    "mean_max": [float(np.mean([enc[(p, s)][f] for p in mined])) for s in (0, 1)]})
        pa = hyper_tail(n, int(la[f]), int(lb[f]), int(lC[f]))
        ref[-1]["all"] = {"fires": {"en": int(la[f]), "ja": int(lb[f])}, "both": int(lC[f]), "p_exact": pa,
                          "cross_lingual": bool(la[f] > 0 and lb[f] > 0 and pa <= thr_all)}
    alive = {f for f in range(N) if any(d[:, f].max() > 0 for d in dense_of.values())}
    return n, ref, int(tested.sum()), thr, alive


def close(x, y, rel=2e-8, abs_=1e-12):  # the files hold 9 significant digits
    if x is None or y is None:
        return x is None and y is None
    return abs(x - y) <= abs_ + rel * abs(y)


def main():
    drive = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="fm_pairs_")
    rng = np.random.default_rng(3)
    sae_dir, corpus, msgs, seqs, docs, W_dec = make(tmp, rng)
    n, ref, n_tested, thr, alive_ref = reference(seqs, docs, W_dec)
    # The fixture is what it claims (checked on the reference, before the C output).
    check(n == N_PAIRS - 1, f"{n} pairs have both sides in the stream")
    check([ref[f]["cross"] for f in range(10)] == [True, False, False, False, False, False, True, False, False, False],
          "reference: latents 0 and 6 are cross-lingual, none of 1-5, 7-9 "
          f"(p_exact {['%.2g' % ref[f]['p_exact'] for f in range(10)]}, tested {[ref[f]['tested'] for f in range(10)]})")
    check([ref[f]["all"]["cross_lingual"] for f in range(10)] == [True] + [False] * 5 + [True, False, False, True],
          "reference: over all tokens latent 9 (on the shared token) is cross-lingual too")
    check(not ref[1]["tested"] and not ref[2]["tested"] and not ref[7]["tested"] and not ref[9]["tested"]
          and ref[4]["tested"] and ref[3]["tested"],
          "reference: the language-specific and unpaired-only latents are untested, the random and always-on are tested")
    check(ref[5]["both"] > ref[5]["null_q999"] * 0 and ref[5]["p_exact"] > thr and ref[5]["p_exact"] < 0.5,
          f"reference: latent 5 co-fires above chance (p {ref[5]['p_exact']:.3g}) but not past the Bonferroni threshold {thr:.3g}")

    out = os.path.join(tmp, "out")
    r = subprocess.run([drive, "stage", msgs, f"sae={sae_dir}", f"out={out}", f"pairs={corpus}",
                        f"pairs_permutations={PERMS}", f"seed={SEED}", f"pairs_alpha={ALPHA}", "threads=1"],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, "fm_drive with pairs exits 0" + ("" if r.returncode == 0 else ": " + r.stderr[-800:]))
    if r.returncode:
        return finish(tmp)
    summ = json.load(open(os.path.join(out, "summary.json")))
    ps = summ.get("pairs", {})
    alive = summ["alive"]
    n_cross = sum(x["cross"] for x in ref)
    n_cross_all = sum(x["all"]["cross_lingual"] for x in ref)
    check(alive == len(alive_ref), f"alive features {alive} = the reference's {len(alive_ref)}")
    check(ps.get("labels") == ["en", "ja"] and ps.get("pairs_in_corpus") == N_PAIRS and ps.get("pairs_mined") == n
          and ps.get("sides_mined_alone") == 1 and ps.get("permutations") == PERMS and ps.get("features_tested") == n_tested
          and ps.get("cross_lingual") == n_cross and close(ps.get("share"), n_cross / alive)
          and ps.get("cross_lingual_all_tokens") == n_cross_all
          and close(ps.get("threshold"), thr) and ps.get("sequences_other") == sum(1 for s in seqs if s[0] in
                                                                                 {d[0] for d in docs if d[3] < 0}),
          f"summary.json's pairs block: {json.dumps({k: v for k, v in ps.items() if k not in ('statistic', 'rule')})}")
    rows = {row["id"]: row for row in summ["features"]}
    bad = []
    for f in range(N):
        path = os.path.join(out, "features", f"{f}.json")
        if f not in alive_ref:
            if os.path.exists(path) or f in rows:
                bad.append(f"{f}: dead but has a file or row")
            continue
        got = json.load(open(path)).get("pairs")
        e = ref[f]
        if got != rows[f].get("pairs"):
            bad.append(f"{f}: the summary row's pairs block differs from the feature file's")
        ok = (got["fires"] == {"en": e["a"], "ja": e["b"]} and got["both"] == e["both"] and got["pairs"] == n
              and got["tested"] == e["tested"] and got["cross_lingual"] == e["cross"]
              and close(got["p_exact"], e["p_exact"]) and close(got["expected"], e["expected"])
              and {k: v for k, v in got["all_tokens"].items() if k != "p_exact"} == {k: v for k, v in e["all"].items() if k != "p_exact"}
              and close(got["all_tokens"]["p_exact"], e["all"]["p_exact"]))
        if e["tested"]:
            ok = ok and close(got["null_mean"], e["null_mean"]) and close(got["null_sd"], e["null_sd"]) \
                and got["null_q999"] == e["null_q999"] and close(got["p_perm"], e["p_perm"])
        else:
            ok = ok and got["null_mean"] == 0 and got["p_perm"] == 1 and got["z"] is None
        ok = ok and all(close(got["mean_max"][l], e["mean_max"][s], 1e-4, 1e-6) for s, l in enumerate(("en", "ja")))
        if not ok:
            bad.append(f"{f}: C {got} vs numpy {e}")
    check(not bad, "every feature's pairs block equals the numpy reference (counts, null, p, rule, mean maxima)"
          + ("" if not bad else ":\n  " + "\n  ".join(bad)))
    # The permuted null estimates the exact one: mean a b / n within 5 standard errors.
    off = [f for f in range(N) if ref[f]["tested"] and ref[f]["null_sd"] > 0 and
           abs(ref[f]["null_mean"] - ref[f]["expected"]) > 5 * ref[f]["null_sd"] / math.sqrt(PERMS)]
    check(not off, f"the permutation null's mean agrees with the hypergeometric a b / n (off: {off})")
    # Its tail too, where the permutations resolve it (latent 5: p ~ 0.01-0.1).
    e5 = ref[5]
    check(abs(e5["p_perm"] - e5["p_exact"]) < 4 * math.sqrt(e5["p_exact"] / PERMS) + 2 / PERMS,
          f"latent 5: the permutation p {e5['p_perm']:.4f} agrees with the exact tail {e5['p_exact']:.4f}")

    # saeflow report: the share per checkpoint, in the table, the HTML and report.json.
    rep = os.path.join(tmp, "report")
    r = subprocess.run([drive, "report", out, "--out", rep, "--no-match"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "report exits 0" + ("" if r.returncode == 0 else ": " + r.stderr[-500:]))
    if r.returncode == 0:
        rj = json.load(open(os.path.join(rep, "report.json")))
        share = 100 * n_cross / alive
        check(close(rj[0].get("cross_lingual_pairs"), n_cross / alive) and rj[0].get("pairs_source", "").endswith("summary.json"),
              f"report.json: cross_lingual_pairs {rj[0].get('cross_lingual_pairs')} from {rj[0].get('pairs_source')}")
        md = open(os.path.join(rep, "report.md")).read()
        html = open(os.path.join(rep, "report.html")).read()
        check(f"{share:.1f}%" in md.split("step1")[1].splitlines()[0] and "x-ling (pairs)" in md,
              f"report.md's row shows the share {share:.1f}% under x-ling (pairs)")
        check(f"{share:.1f}%" in html and "Cross-lingual (pairs" in html, "report.html shows it and charts it")

    # The corpus as two files (every English row in one, every Japanese row in the other): the same.
    rows_all = [json.loads(l) for l in gzip.open(corpus, "rt")]
    halves = [os.path.join(tmp, f"half{i}.jsonl") for i in (0, 1)]
    for i, path in enumerate(halves):
        with open(path, "w") as f:
            f.writelines(json.dumps(x) + "\n" for x in rows_all if (x["lang"] == "ja") == i)
    out2 = os.path.join(tmp, "out2")
    r = subprocess.run([drive, "stage", msgs, f"sae={sae_dir}", f"out={out2}", f"pairs={','.join(halves)}",
                        f"pairs_permutations={PERMS}", f"seed={SEED}", f"pairs_alpha={ALPHA}", "threads=1"],
                       capture_output=True, text=True, timeout=120)
    p2 = json.load(open(os.path.join(out2, "summary.json"))).get("pairs", {}) if r.returncode == 0 else {}
    check(r.returncode == 0 and {k: v for k, v in p2.items() if k != "corpus"} == {k: v for k, v in ps.items() if k != "corpus"},
          "pairs = two files (English rows in one, Japanese in the other) gives the same block" + ("" if r.returncode == 0 else ": " + r.stderr[-300:]))

    # Errors name the problem.
    def fails(what, corpus_rows, words, stream=msgs):
        path = os.path.join(tmp, "c.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(x) + "\n" for x in corpus_rows)
        rr = subprocess.run([drive, "stage", stream, f"sae={sae_dir}", f"out={tmp}/bad", f"pairs={path}", "threads=1"],
                            capture_output=True, text=True, timeout=60)
        check(rr.returncode == 1 and all(w in rr.stderr for w in words) and not os.path.exists(f"{tmp}/bad/summary.json"),
              f"{what}: exit 1 and a message: {rr.stderr.strip()[-300:]!r}")

    rows_ok = [json.loads(l) for l in gzip.open(corpus, "rt")]
    fails("a corpus without pairs", [dict(x, pair=None) for x in rows_ok], ["none of its", "rows has a `pair`"])
    fails("a corpus with no pair field at all", [{k: v for k, v in x.items() if k != "pair"} for x in rows_ok],
          ["none of its", "rows has a `pair`"])
    fails("a stream with both sides of none of the pairs (other ids)",
          [dict(x, id="other/" + x["id"], pair=x["pair"] and "other/" + x["pair"]) for x in rows_ok],
          ["both sides of none of the 60 pairs", "split = all"])
    few = [x for x in rows_ok if x["pair"] is None or int(x["id"].split("page")[1].split(".")[0]) < 8]
    fails("a stream with both sides of only 8 pairs", few, ["only 8 of the 8 pairs", "too few"])
    one_way = [dict(x, pair="man/ja/page1.1") if x["id"] == "man/en/page0.1" else x for x in rows_ok]
    fails("a pair that does not name its partner back", one_way, ["must name each other"])
    three = [dict(x, lang="ko") if x["id"] == "man/ja/page3.1" else x for x in rows_ok]
    fails("a third language among the pairs", three, ["have the two languages"])
    return finish(tmp)


def finish(tmp):
    if failures:
        print(f"{len(failures)} failure(s); files kept in {tmp}")
        return 1
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
