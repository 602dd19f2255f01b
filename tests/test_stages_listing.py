#!/usr/bin/env python3
"""`saeflow stages` is the full reference of every stage (gst-inspect-like): each stage's section with
its parameters, types, defaults and docs; `--list` one line per stage; NAME one stage.
Usage: test_stages_listing.py SAEFLOW"""
import re, subprocess, sys

saeflow = sys.argv[1]
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def stages(*args):
    return subprocess.run([saeflow, "stages", *args], capture_output=True, text=True, timeout=60)


names = [line.split()[0] for line in stages("--list").stdout.splitlines()[1:] if line.startswith("  ")]
check({"tensor_gen", "verify_sink", "text_source", "tokenizer"} <= set(names), f"--list names the built-in stages ({len(names)})")
full = stages()
sections = {m.group(1): m.start() for m in re.finditer(r"^(\w+) — ", full.stdout, re.M)}
check(full.returncode == 0 and list(sections) == names, "saeflow stages has one section per stage, in --list order")


def section(name):
    start = sections.get(name, -1)
    if start < 0: return ""
    ends = [s for s in sections.values() if s > start]
    return full.stdout[start:min(ends) if ends else len(full.stdout)]


def has_param(text, name, type_, default, doc_words):
    return re.search(rf"^  {name} +{type_} +{re.escape(default)} +.*{re.escape(doc_words)}", text, re.M) is not None


# (stage, parameter, type, default, words of its doc), as the stages' READMEs document them
expected = [
    ("tensor_gen", "count", "int", "1000", "messages to generate"),
    ("tensor_gen", "fill", "bool", "true", "random numbers"),
    ("tokenizer", "tokenizer", "string", "(required)", "SentencePiece"),
    ("tokenizer", "seq_len", "int", "64", "tokens per sequence"),
    ("tokenizer", "replicas", "int", "1", "parallel instances"),
    ("verify_sink", "input", "list", "", "stages to read from"),
]
for stage, p, t, d, doc in expected:
    check(has_param(section(stage), p, t, d, doc), f"the full listing documents {stage}.{p} ({t}, default {d or 'none'})")
check("parameters:" in section("text_source") and "  input " not in section("text_source"),
      "a source's section lists its parameters and no 'input'")
check(all("parameters:" in section(n) for n in names), "every stage's section has its parameters")

one = stages("tokenizer")
check(one.returncode == 0 and one.stdout.startswith("tokenizer — ") and "tensor_gen" not in one.stdout,
      "saeflow stages NAME prints that stage only")
bad = stages("no_such_stage")
check(bad.returncode == 2 and "no stage 'no_such_stage'" in bad.stderr, "an unknown stage name exits 2 with a message")

print(f"{failures} failure(s)")
sys.exit(1 if failures else 0)
