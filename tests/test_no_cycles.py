#!/usr/bin/env python3
"""No dependency cycles between source files: a.c depends on b.c when it calls a function that
b.c defines (found as text: non-static definitions, then calls by name, outside comments and
strings; across folders only calls into core/ count, as two stages may each have a function of one
name). The graph of core/ and stages/ must have no cycle (issue 18: tok_core.c and tok_hf.c,
sae_model.c and sae_pth_load.c used to call each other). Prints each cycle found and fails; tests/ and the stages' tests/ folders are left out (a test may call anything).

Usage: test_no_cycles.py SOURCE_ROOT"""
import os
import re
import sys

def graph(root):
    has_c = set()
    for top in ("core", "stages"):
        for d, subdirs, files in os.walk(os.path.join(root, top)):
            subdirs[:] = [s for s in subdirs if s not in ("tests", "fuzz")]
            has_c.update(os.path.relpath(os.path.join(d, f[:-2]), root) for f in files if f.endswith(".c"))
    g = {m: set() for m in sorted(has_c)}
    # A function called in one .c and defined in another is a dependency on the defining file,
    # wherever it is declared (progress.c's functions were once declared in runtime.h; lm_model.h
    # declares functions of lm_model.c, lm_forward.c and lm_backward.c alike, so including a header
    # is no dependency by itself).
    defined = {}
    texts = {m: strip(open(os.path.join(root, m + ".c"), encoding="utf-8", errors="replace").read()) for m in has_c}
    for m, text in texts.items():
        for name in DEFINITION.findall(text):
            defined.setdefault(name, set()).add(m)
    for m, text in texts.items():
        for name in set(CALL.findall(text)):
            for d in defined.get(name, ()):
                # Only within a folder or into core: two stages may each define a static helper of one name.
                if d != m and (os.path.dirname(d) == os.path.dirname(m) or d.startswith("core")):
                    g[m].add(d)
    return g


# A non-static function definition at the start of a line: "type name(args) {".
DEFINITION = re.compile(r"^(?!static\b)[A-Za-z_][\w \t\*]*?\b(\w+)\s*\([^;{]*\)\s*\{", re.M)
CALL = re.compile(r"\b(\w+)\s*\(")


def strip(text):
    """The text without comments and string literals (their words are not calls)."""
    return re.sub(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"', " ", text, flags=re.S)


def cycles(g):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    g = graph(root)
    if len(g) < 20:
        print(f"FAIL: only {len(g)} modules under {root}/core and {root}/stages: wrong root?")
        return 1
    # The check itself must see a cycle: two modules that include each other's header.
    if not cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]:
        print("FAIL: the cycle finder missed a planted cycle")
        return 1
    found = cycles(g)
    for comp in found:
        edges = [f"{a} -> {b}" for a in comp for b in sorted(g[a]) if b in comp]
        print("FAIL: dependency cycle among " + ", ".join(comp) + ": " + "; ".join(edges))
    if not found:
        print(f"ok: {len(g)} modules, {sum(len(v) for v in g.values())} dependencies, no cycle")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
