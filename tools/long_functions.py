#!/usr/bin/env python3
"""Lists the C functions of core/ and stages/ (tests left out) longer than a limit (default 80
lines, from the line of the name to the closing brace), longest first: the ones to split along
their seams, or to give a comment saying why they stay whole (issue 18).

Usage: tools/long_functions.py [--limit N] [ROOT]"""
import os
import re
import sys

# A function definition starts at column 0: "type name(args) {" (the arguments may wrap).
START = re.compile(r"^(?:static\s+|inline\s+)*[A-Za-z_][\w \t\*]*?\b(\w+)\s*\([^;]*$")


def functions(path):
    lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
    i = 0
    while i < len(lines):
        m = START.match(lines[i])
        if m and not lines[i].startswith(("typedef", "struct", "return", "#", "else", "if", "for", "while")):
            j = i
            while j < len(lines) and not lines[j].rstrip().endswith("{") and ";" not in lines[j]:
                j += 1
            if j < len(lines) and lines[j].rstrip().endswith("{") and ";" not in lines[j].split("{")[0][-2:]:
                k = j + 1
                while k < len(lines) and lines[k] != "}":
                    k += 1
                yield m.group(1), i + 1, k - i + 1
                i = k
        i += 1


def main():
    args = sys.argv[1:]
    limit = 80
    if args[:1] == ["--limit"]:
        limit, args = int(args[1]), args[2:]
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    found = []
    for top in ("core", "stages"):
        for d, subdirs, files in os.walk(os.path.join(root, top)):
            subdirs[:] = [s for s in subdirs if s not in ("tests", "fuzz")]
            for f in files:
                if f.endswith(".c"):
                    path = os.path.join(d, f)
                    found += [(n, os.path.relpath(path, root), line, name) for name, line, n in functions(path) if n > limit]
    for n, path, line, name in sorted(found, reverse=True):
        print(f"{n:5d}  {path}:{line}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
