#!/usr/bin/python3
"""Checks saeflow's "paper" language rule against the paper's own released data.

llm-jp/llm-jp-sae releases docs/data/<checkpoint>/<id>.json for checkpoints 10, 100, 1000, 10000,
100000 and 988240 (598 feature files), each holding its examples (`token_act`) and the en/ja counts
that the paper's code (detect_language / auto_language) computed from them (`language`). This runs
`saeflow classify --json` on the six folders and requires every stored count to be reproduced
exactly, and the per-checkpoint verdict counts (en / ja / mixed: strictly more than 90% of all
examples) to be those of the stored counts. It also reports how many verdicts the project's earlier
approximation (the "ascii" rule) and the "script" rule give differently.

    tools/check_paper_language.py [PAPER_DATA_DIR] [--saeflow PATH]

PAPER_DATA_DIR is a local copy of the repository or its docs/data (the repository has no licence: nothing of it is
committed here). Without it, $SAEFLOW_PAPER_DATA; when neither is given or the folder does not
exist, it exits 77 (meson's "skipped"). Exit 0: all reproduced; 1: a mismatch (each printed).
"""
import argparse
import json
import os
import subprocess
import sys

CHECKPOINTS = ["10", "100", "1000", "10000", "100000", "988240"]
# Verdict counts (en, ja, mixed) of the released files, from their stored counts; checkpoint 1000
# has 98 files, the others 100, so for those the counts are the percentages.
PAPER_VERDICTS = {"10": (13, 20, 67), "100": (15, 21, 64), "1000": (51, 29, 18),
                  "10000": (53, 41, 6), "100000": (51, 42, 7), "988240": (40, 35, 25)}
N_FILES = 598


def verdict(en, ja, n):
    return "unknown" if n == 0 else "en" if en / n > 0.9 else "ja" if ja / n > 0.9 else "mixed"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", help="llm-jp-sae's docs/data (default: $SAEFLOW_PAPER_DATA)")
    ap.add_argument("--saeflow", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "core", "saeflow"),
                    help="the saeflow executable (default: build/core/saeflow)")
    args = ap.parse_args()
    data = args.data or os.environ.get("SAEFLOW_PAPER_DATA")
    if not data:
        print("skipped: give PAPER_DATA_DIR or set SAEFLOW_PAPER_DATA to a copy of llm-jp-sae's docs/data")
        return 77
    if not os.path.isdir(data):
        if args.data:
            sys.exit(f"{data}: not a directory (llm-jp-sae's docs/data, with one folder per checkpoint)")
        print(f"skipped: SAEFLOW_PAPER_DATA={data} does not exist")
        return 77

    if os.path.isdir(os.path.join(data, "docs", "data")):  # the repository's root, as paper_granularity.py takes it
        data = os.path.join(data, "docs", "data")
    dirs = [os.path.join(data, c) for c in CHECKPOINTS]
    missing = [d for d in dirs if not os.path.isdir(d)]
    if missing:
        sys.exit(f"missing checkpoint folders: {', '.join(missing)}")
    r = subprocess.run([args.saeflow, "classify", "--json", *dirs], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"saeflow classify failed ({r.returncode}): {r.stderr.strip()}")
    rows = [json.loads(line) for line in r.stdout.splitlines()]

    mismatches = []
    files = reproduced = 0
    print(f"{'checkpoint':>10} {'files':>5} | {'en':>10} {'ja':>10} {'mixed':>10} | verdicts differing from the paper's: ascii script")
    for c, d in zip(CHECKPOINTS, dirs):
        mine = [row for row in rows if row["dir"] == d]
        tally = {"en": 0, "ja": 0, "mixed": 0, "unknown": 0}
        differ = {"ascii": [], "script": []}
        for row in mine:
            files += 1
            name = f"{c}/{row['file']}"
            label = row.get("label", {}).get("language")
            if label is None:
                mismatches.append(f"{name}: no stored en/ja counts")
                continue
            got = row["language"]["paper"]
            if (got["en"], got["ja"]) != (label["en"], label["ja"]) or got["none"] != 0:
                mismatches.append(f"{name}: paper rule en {got['en']} ja {got['ja']} none {got['none']}, "
                                  f"stored en {label['en']} ja {label['ja']}")
            else:
                reproduced += 1
            want = verdict(label["en"], label["ja"], row["examples"])
            if got["verdict"] != want:
                mismatches.append(f"{name}: verdict {got['verdict']}, stored counts give {want}")
            tally[got["verdict"]] += 1
            for rule in differ:
                if row["language"][rule]["verdict"] != want:
                    differ[rule].append(f"{row['file'][:-5]} ({want}->{row['language'][rule]['verdict']})")
        n = len(mine)
        counts = (tally["en"], tally["ja"], tally["mixed"])
        if counts != PAPER_VERDICTS[c] or tally["unknown"]:
            mismatches.append(f"checkpoint {c}: verdicts en/ja/mixed {counts}, the paper's data {PAPER_VERDICTS[c]}")
        shares = " ".join(f"{k:>3} {100 * tally[k] / max(n, 1):5.1f}%" for k in ("en", "ja", "mixed"))
        print(f"{c:>10} {n:>5} | {shares} | {len(differ['ascii'])} {len(differ['script'])}")
        for rule, ids in differ.items():
            if ids:
                print(f"{'':>18}{rule}: {', '.join(ids)}")
    if files != N_FILES:
        mismatches.append(f"{files} feature files, the release has {N_FILES}")
    for m in mismatches:
        print("MISMATCH:", m)
    print(f"paper rule: {reproduced}/{files} stored en/ja counts reproduced; {'FAIL' if mismatches else 'ok'}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
