#!/usr/bin/python3
"""text_source through real pipelines (text_source -> zmq_out), checked against the input files:
every valid document exactly once, bad lines skipped with file:line (or fatal), stable ids
(recomputed here from the documented hash), reproducible splits and orders, JSON Lines .gz and
plain text, paragraphs, replicas, and the team's Debian docs corpus.
usage: test_text_source.py SAEFLOW REPO_ROOT"""
import collections
import gzip
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import sfrun  # noqa: E402

saeflow, root = sys.argv[1], sys.argv[2]
sfrun.skip_unless_stage(saeflow, "zmq_out")
tmp = tempfile.mkdtemp(prefix="ts-test-")
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL", what)
    else:
        print("ok  ", what)


def fnv_id(label, key, index=None):
    """The documented doc id: 63-bit FNV-1a of label NUL key [NUL index as 8 LE bytes]."""
    h = 1469598103934665603
    data = label.encode() + b"\0" + key.encode()
    if index is not None:
        data += b"\0" + index.to_bytes(8, "little", signed=True)
    for b in data:
        h = ((h ^ b) * 1099511628211) & (2**64 - 1)
    return h & (2**63 - 1)


# ---- corpora: two gzipped JSON Lines files (en) and a plain-text file (ja) ----
expected = {}  # doc_id -> (label, text, source)
en_paths = []
BAD_LINES = {11: b'{"id": "broken", "text": ',          # malformed JSON
             21: b'{"id": "notext", "body": "x"}',       # missing field
             31: b'{"id": "bad", "text": "\xff\xfe"}',   # invalid UTF-8 inside JSON
             41: b"   "}                                 # blank: ignored, not an error
for f in range(2):
    path = os.path.join(tmp, f"en-{f}.jsonl.gz")
    en_paths.append(path)
    lines = []
    for i in range(300):
        while f == 0 and len(lines) + 1 in BAD_LINES:
            lines.append(BAD_LINES[len(lines) + 1])
        doc_id = f"en-{f}-{i}"
        text = f"English document {f}/{i}: the quick brown fox jumps over {i} lazy dogs."
        lines.append(json.dumps({"id": doc_id, "text": text, "extra": [1, 2]}).encode())
        expected[fnv_id("en", doc_id)] = ("en", text, f"{path}:{len(lines)}")
    with gzip.open(path, "wb") as g:
        g.write(b"\n".join(lines) + b"\n")
ja_path = os.path.join(tmp, "ja.txt")
with open(ja_path, "wb") as g:
    for i in range(300):
        text = f"日本語の文書{i}番です。吾輩は猫である。"
        g.write(text.encode() + b"\n")
        expected[fnv_id("ja", ja_path, i + 1)] = ("ja", text, f"{ja_path}:{i + 1}")
    g.write(b"invalid \xc3\x28 utf-8\n")                              # line 301
valid = len(expected)

CORPORA = f"en={tmp}/en-*.jsonl.gz,ja={ja_path}"


def flow(**params):
    p = {"corpora": f'"{CORPORA}"', "id_field": "id", "split": "all"}
    p.update({k: (f'"{v}"' if isinstance(v, str) and not v.isidentifier() else v) for k, v in params.items()})
    body = "\n".join(f"    {k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in p.items())
    return f"stage src = text_source {{\n{body}\n}}\nstage out = zmq_out {{\n    input = src\n    endpoint = \"@ENDPOINT@\"\n}}\n"


def docs(**params):
    msgs, rc, err = sfrun.run(saeflow, flow(**params))
    return msgs, rc, err


# ---- everything once, ids, labels, sources, bad lines reported ----
msgs, rc, err = docs(seed=1)
ids = [m["doc_id"] for m in msgs]
check(rc == 0, f"split=all run succeeds (rc {rc})")
check(len(msgs) == valid and len(set(ids)) == valid, f"{valid} valid documents, each exactly once (got {len(msgs)})")
check(set(ids) == set(expected), "doc ids equal the documented FNV-1a hash of label + id (or path + line)")
check(all(expected[m["doc_id"]][:2] == (m["label"], m["text"]) for m in msgs if m["doc_id"] in expected),
      "labels and texts match the input")
check(all(expected[m["doc_id"]][2] == m["source"] for m in msgs if m["doc_id"] in expected),
      "source is file:line")
bad0 = en_paths[0]
for where, words in [(f"{bad0}:11:", "malformed JSON"), (f"{bad0}:21:", 'field "text" missing'),
                     (f"{bad0}:31:", "invalid UTF-8"), (f"{ja_path}:301:", "invalid UTF-8")]:
    check(where in err and words in err.split(where, 1)[1].split("\n")[0], f"skipped input reported as {where} {words}")
check("skipped_bad_json = 1" in err and "skipped_missing_field = 1" in err and "skipped_bad_utf8 = 2" in err,
      "run summary counts the skipped records")

# ---- order: reproducible from the seed; interleaved corpora ----
again, _, _ = docs(seed=1)
other, _, _ = docs(seed=2)
check([m["doc_id"] for m in again] == ids, "same seed, same order")
check([m["doc_id"] for m in other] != ids and sorted(m["doc_id"] for m in other) == sorted(ids),
      "another seed, another order of the same documents")
plain, _, _ = docs(seed=3, shuffle_buffer=0)
first = collections.Counter(m["label"] for m in plain[:100])
check(first["en"] > 20 and first["ja"] > 20, f"corpora are interleaved without shuffling too ({dict(first)})")

m, rc, _ = docs(seed=3, shuffle_buffer=0, weights="en=3,ja=1")
first = collections.Counter(x["label"] for x in m[:400])
check(rc == 0 and len(m) == valid and abs(first["en"] / 400 - 0.75) < 0.07,
      f"weights en=3,ja=1: {first['en'] / 400:.2f} English among the first 400, all documents still read")
m, rc, err = docs(weights="fr=2")
check(rc != 0 and "weights item 'fr=2'" in err, "weights naming no corpus is an error")

# ---- splits: disjoint, complete, close to 0.8/0.1/0.1, independent of the order seed ----
parts = {}
for sp in ("train", "validation", "test"):
    m, rc, _ = docs(split=sp, seed=5)
    parts[sp] = {x["doc_id"] for x in m}
    check(rc == 0 and all(x["split"] == sp for x in m), f"split={sp}: {len(m)} documents, all marked {sp}")
union = parts["train"] | parts["validation"] | parts["test"]
check(len(union) == valid and sum(map(len, parts.values())) == valid, "splits are disjoint and cover every document")
frac = {k: len(v) / valid for k, v in parts.items()}
check(abs(frac["train"] - 0.8) < 0.05 and abs(frac["validation"] - 0.1) < 0.04 and abs(frac["test"] - 0.1) < 0.04,
      f"split sizes near 0.8/0.1/0.1 ({', '.join(f'{k} {v:.3f}' for k, v in frac.items())})")
m, _, _ = docs(split="test", seed=99, shuffle_buffer=0)
check({x["doc_id"] for x in m} == parts["test"], "the order seed does not move documents between splits")
m, _, _ = docs(split="test", split_seed=7)
check({x["doc_id"] for x in m} != parts["test"], "another split_seed gives another split")
m, _, _ = docs(split="train", split_ratios="1,0,0")
check(len(m) == valid, "split_ratios 1,0,0 puts everything in train")

# ---- replicas share the documents ----
m, rc, _ = sfrun.run(saeflow, flow(seed=1).replace("    split = all", "    split = all\n    replicas = 2"))
check(rc == 0 and len(m) == valid and {x["doc_id"] for x in m} == set(ids), "2 replicas emit every document once")

# ---- bad input fatal on request ----
m, rc, err = docs(on_error="fail", shuffle_buffer=0)
check(rc == 1 and ":11: malformed JSON" in err, f"on_error=fail stops the run with file:line (rc {rc})")
m, rc, err = docs(corpora=f"en={tmp}/nothing-*.jsonl")
check(rc != 0 and "no file matches" in err, "a glob matching nothing is an error")

# ---- paragraphs and max_docs ----
para = os.path.join(tmp, "para.txt")
with open(para, "w") as g:
    g.write("first paragraph\nstill first\n\n\nsecond\n  \nthird one\n")
m, rc, _ = docs(corpora=f"p={para}", unit="paragraph", shuffle_buffer=0)
check(rc == 0 and [x["text"] for x in m] == ["first paragraph\nstill first", "second", "third one"],
      "unit=paragraph: blank-line separated documents")
check([x["source"] for x in m] == [f"{para}:1", f"{para}:5", f"{para}:7"], "paragraph source is its first line")
m, rc, _ = docs(corpora=f"p={para},j={ja_path}", unit="file", format="text", shuffle_buffer=0, on_error="skip")
texts = sorted(x["text"] for x in m)
check(rc == 0 and texts == ["first paragraph\nstill first\n\n\nsecond\n  \nthird one"],
      "unit=file: a whole file is one document; a file with invalid UTF-8 is skipped whole")
long_path = os.path.join(tmp, "long.txt")
with open(long_path, "w") as g:
    g.write("short line\n" + "x" * 5000 + "\nanother short line\n")
m, rc, err = docs(corpora=f"l={long_path}", max_doc_bytes=1000, shuffle_buffer=0)
check(rc == 0 and [x["text"] for x in m] == ["short line", "another short line"]
      and f"{long_path}:2: line longer than max_doc_bytes" in err and "skipped_too_long = 1" in err,
      "a line over max_doc_bytes is skipped, reported with file:line and counted")
bad_para = os.path.join(tmp, "badpara.txt")
with open(bad_para, "wb") as g:
    g.write(b"good one\n\nbroken \xff here\nrest of the broken paragraph\n\nlast good\n")
m, rc, err = docs(corpora=f"b={bad_para}", unit="paragraph", shuffle_buffer=0)
check(rc == 0 and [x["text"] for x in m] == ["good one", "last good"] and f"{bad_para}:3: invalid UTF-8" in err,
      "unit=paragraph: a paragraph with a bad line is skipped whole, reported at that line")
m, rc, err = docs(max_docs=17)
check(rc == 0 and len(m) == 17, "max_docs stops early")
read = [int(l.split("=")[1]) for l in err.splitlines() if "src: documents_read = " in l]
check("src: documents = 17\n" in err and read and read[0] >= 17,
      f"the summary counts the 17 documents emitted (and the {read} read into the shuffle buffer)")

# ---- split_field: the row's split instead of the hash; a bad value is bad input ----
sf_path = os.path.join(tmp, "with-split.jsonl")
with open(sf_path, "w") as g:
    for i, sp in enumerate(["train", "valid", "validation", "test", "bogus", "test"]):
        g.write(json.dumps({"id": f"s{i}", "text": f"document {i}", "split": sp}) + "\n")
    g.write(json.dumps({"id": "s6", "text": "document 6", "split": 3}) + "\n")
m, rc, err = docs(corpora=f"x={sf_path}", split_field="split", split="validation")
check(rc == 0 and sorted(x["text"] for x in m) == ["document 1", "document 2"],
      "split_field: valid and validation rows form the validation split")
m, rc, err = docs(corpora=f"x={sf_path}", split_field="split", split="test")
check(rc == 0 and sorted(x["text"] for x in m) == ["document 3", "document 5"] and
      f"{sf_path}:5: field \"split\" is \"bogus\"" in err and f"{sf_path}:7: field \"split\" missing" in err,
      "split_field: test rows only; a bad value and a non-string are skipped with file:line")

# ---- a corpus without the split field: an error, and one warning line for all its lines ----
nosplit = os.path.join(tmp, "no-split.jsonl")
with open(nosplit, "w") as g:
    for i in range(300):
        g.write(json.dumps({"id": f"n{i}", "text": f"document {i}"}) + "\n")
m, rc, err = docs(corpora=f"x={nosplit}", split_field="split", split="train")
warned = [line for line in err.splitlines() if 'skipped: ' in line and 'field "split" missing' in line]
check(rc == 1 and not m and "text_source emitted no document" in err and "300 skipped" in err,
      f"a corpus without split_field: the run fails naming why (rc {rc}: {err.strip()[-300:]!r})")
check(len(warned) == 2 and f"{nosplit}:1: field" in warned[0] and warned[1].endswith("and 299 more like it"),
      f"300 identical warnings collapse into the first and its count ({len(warned)} lines: {warned[-1:]!r})")
m, rc, err = docs(corpora=f"x={nosplit}", split="test", max_docs=0)
check(rc == 0 and not m, "max_docs = 0 asks for nothing: no error")

# ---- the team's bilingual corpus (fields id, lang, source, text, pair) ----
corpus = os.path.join(root, "data", "corpus", "debian-docs.jsonl.gz")
if os.path.exists(corpus):
    rows = {}
    with gzip.open(corpus, "rt", encoding="utf-8") as g:
        for line in g:
            r = json.loads(line)
            rows[fnv_id(r["lang"], r["id"])] = r
    m, rc, _ = docs(corpora=corpus, label_field="lang", max_docs=300, seed=4)
    check(rc == 0 and len(m) == 300, "debian-docs corpus: 300 documents")
    check(all(x["doc_id"] in rows and rows[x["doc_id"]]["text"] == x["text"] and rows[x["doc_id"]]["lang"] == x["label"]
              for x in m), "debian-docs: label from the lang field, text and id from the row")
    check(len({x["label"] for x in m}) == 2, "debian-docs: both languages appear")
    want_test = sorted(i for i, r in rows.items() if r["split"] == "test")
    m, rc, _ = docs(corpora=corpus, label_field="lang", split_field="split", split="test")
    check(rc == 0 and sorted(x["doc_id"] for x in m) == want_test and {x["split"] for x in m} == {"test"},
          f"debian-docs split_field=split: exactly its {len(want_test)} rows marked test")
else:
    print("note: data/corpus/debian-docs.jsonl.gz absent, corpus check skipped")

print("FAILED" if failures else "all passed", failures)
sys.exit(1 if failures else 0)
