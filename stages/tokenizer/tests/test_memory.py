#!/usr/bin/python3
"""Slow suite: text_source -> tokenizer -> zmq_out over the Debian docs corpus read once and read four
times (four labelled corpora on the same file): the saeflow process's peak RSS must not grow with
the amount of text (streaming, bounded shuffle buffer), and every sequence must arrive.
usage: test_memory.py SAEFLOW CORPUS LLMJP_MODEL SUITE_MODEL (the latter where LLM-jp's is absent)"""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "text_source", "tests"))
import sfrun  # noqa: E402

saeflow, corpus, llmjp, suite_model = sys.argv[1:5]
sfrun.skip_unless_stage(saeflow, "zmq_out")
if not os.path.exists(corpus):
    print(f"SKIP: {corpus} absent")
    sys.exit(77)
if not os.path.exists(llmjp):
    print(f"note: {llmjp} absent, using {suite_model}")
    llmjp = suite_model
# Wrap saeflow in /usr/bin/time to read its peak RSS.
wrapper = os.path.join(tempfile.mkdtemp(prefix="tok-mem-"), "saeflow-timed")
with open(wrapper, "w") as f:
    f.write(f'#!/bin/sh\nexec /usr/bin/time -f "PEAK_RSS_KB %M" "{saeflow}" "$@"\n')
os.chmod(wrapper, 0o755)


def run(copies):
    corpora = ",".join(f"c{i}={corpus}" for i in range(copies))
    msgs, rc, err = sfrun.run(wrapper, f"""
stage src = text_source {{
    corpora = "{corpora}"
    split = all
    shuffle_buffer = 2000
}}
stage tok = tokenizer {{
    input = src
    tokenizer = "{llmjp}"
}}
stage out = zmq_out {{
    input = tok
    endpoint = "@ENDPOINT@"
}}
""", timeout=600)
    rss = int(re.search(r"PEAK_RSS_KB (\d+)", err).group(1))
    seqs = sum(m["tokens"].shape[0] for m in msgs)
    return rc, rss, seqs


rc1, rss1, seqs1 = run(1)
rc4, rss4, seqs4 = run(4)
print(f"1 copy: {seqs1} sequences, peak RSS {rss1 / 1024:.1f} MB; 4 copies: {seqs4} sequences, {rss4 / 1024:.1f} MB")
ok = rc1 == 0 and rc4 == 0 and seqs4 == 4 * seqs1 and rss4 < rss1 * 1.25 + 20 * 1024
print("ok  " if ok else "FAIL", "4x the text: 4x the sequences, peak memory within 25% + 20 MB")
sys.exit(0 if ok else 1)
