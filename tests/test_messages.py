#!/usr/bin/env python3
"""core/MESSAGES.md against the code: every message kind's field table in the document must list the
same fields, with the same types and the same optional marks, as the field lists of core/lib/kinds.c
(printed by `saeflow stages --kinds`), and every kind must be in both. Usage: test_messages.py SAEFLOW MESSAGES_MD"""
import re, subprocess, sys

saeflow, doc_path = sys.argv[1], sys.argv[2]
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


# The code: "kind:" then "  key  type[, optional]" lines.
code, kind = {}, None
out = subprocess.run([saeflow, "stages", "--kinds"], capture_output=True, text=True, timeout=60)
check(out.returncode == 0, f"saeflow stages --kinds exits 0 ({out.stderr.strip()[-200:]})")
for line in out.stdout.splitlines():
    if re.match(r"^[a-z]+:$", line):
        kind = line[:-1]
        code[kind] = {}
    elif line.startswith("  ") and kind:
        key, typ = line.split(None, 1)
        optional = typ.endswith(", optional")
        code[kind][key] = (typ.removesuffix(", optional").strip(), optional)

# The document: "## KIND  (...)" headings, then a | key | type | meaning | table.
docs, kind = {}, None
aliases = {}  # "as in *tokens*": the type of the same key in that kind
for line in open(doc_path, encoding="utf-8"):
    m = re.match(r"^## (\w+)\s", line)
    if m:
        kind = m.group(1)
        docs[kind] = {}
        continue
    if line.startswith("###"):
        kind = None  # subsections describe variants in prose, not new fields
        continue
    if kind and line.startswith("| `"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        keys = re.findall(r"`(\w+)`", cells[0])
        typ = cells[1]
        for key in keys:
            docs[kind][key] = typ

check(set(docs) == set(code), f"the same kinds in MESSAGES.md {sorted(docs)} and the code {sorted(code)}")


def normal(t):
    """A document type cell as the code spells it: 'int32 tensor [B, T]' -> 'int32 [B, T]'."""
    return re.sub(r"\s+", " ", t.replace(" tensor", "")).strip()


for kind in sorted(set(docs) & set(code)):
    d, c = docs[kind], code[kind]
    check(set(d) == set(c), f"{kind}: the same fields in the document {sorted(d)} and the code {sorted(c)}")
    for key in sorted(set(d) & set(c)):
        typ, optional = c[key]
        cell = d[key]
        m = re.match(r"as in \*(\w+)\*", cell)
        if m:  # "as in *tokens*": the other kind's row must match
            cell = docs.get(m.group(1), {}).get(key, "")
            check(cell != "", f"{kind}.{key}: 'as in *{m.group(1)}*' names a kind with that field")
        doc_optional = "optional" in cell
        cell = normal(cell.replace(", optional", ""))
        check(cell == typ, f"{kind}.{key}: type '{cell}' in the document, '{typ}' in the code")
        check(doc_optional == optional, f"{kind}.{key}: optional in the document {doc_optional}, in the code {optional}")

# A planted mismatch is found: the checker itself can fail.
check(normal("int32 tensor [B, T]") == "int32 [B, T]" and normal("int64 tensor [B]") != "int32 [B]", "type normalisation")
sys.exit(1 if failures else 0)
