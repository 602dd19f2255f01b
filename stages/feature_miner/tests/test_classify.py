"""`saeflow classify` on the committed fixture (classify_fixture/: made-up feature files in the
paper's schema covering the paper rule's edge cases: ties, strip, Unicode whitespace, the digit walk
and its wrap before position 0, all-digit examples, byte pieces, punctuation in and out of the
English class, the 90% boundary), and its errors.

Each fixture file holds its expected paper-rule counts and verdict ("expect") and, as the paper's
files do, its en/ja counts ("language"); they are checked here against paper_language.py (the rule
in Python, with Python's own re and strip) before saeflow is checked against them.

    test_classify.py SAEFLOW
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paper_language  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classify_fixture")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def classify(saeflow, *args):
    return subprocess.run([saeflow, "classify", *args], capture_output=True, text=True)


def main():
    saeflow = sys.argv[1]
    files = sorted(glob.glob(os.path.join(FIXTURE, "*.json")))
    check(len(files) >= 10, f"fixture: {len(files)} files")
    fixture = {os.path.basename(p): json.load(open(p, encoding="utf-8")) for p in files}
    for name, d in fixture.items():
        counts, verdict = paper_language.feature_language(d["token_act"])
        want = d["expect"]["paper"]
        check(counts == {k: want[k] for k in ("en", "ja", "none")} and verdict == want["verdict"],
              f"fixture {name}: expects {want}, Python's rule gives {counts} {verdict}")

    r = classify(saeflow, "--json", FIXTURE)
    check(r.returncode == 0, f"classify --json: exit {r.returncode}: {r.stderr}")
    rows = {j["file"]: j for j in map(json.loads, r.stdout.splitlines())}
    check(sorted(rows) == sorted(fixture), f"classify read {sorted(rows)}")
    for name, d in fixture.items():
        j = rows.get(name)
        if not j:
            continue
        got, want = j["language"]["paper"], d["expect"]["paper"]
        check(all(got[k] == want[k] for k in ("en", "ja", "none", "verdict")) and got["other"] == 0,
              f"{name}: paper rule {got}, expected {want}")
        check(j["examples"] == len(d["token_act"]) and j["dir"] == FIXTURE, f"{name}: examples, dir")
        check(set(j["language"]) == {"paper", "ascii", "script"}, f"{name}: rules {sorted(j['language'])}")
        for rule, v in j["language"].items():
            check(sum(v[k] for k in ("en", "ja", "other", "none")) == len(d["token_act"]), f"{name}: {rule} counts cover every example")
        check(j["label"]["language"] == d["language"], f"{name}: label passes the file's counts through")
        check(j["label"].get("granularity") == d.get("granularity"), f"{name}: hand granularity passed through")
        check(j["granularity"] in ("token", "concept", "uninterpretable", "few"), f"{name}: granularity {j['granularity']}")
    # Where the ascii rule differs: it leaves examples without a language out of the vote.
    nm = rows.get("boundary_none_mixed.json")
    check(nm and nm["language"]["ascii"]["verdict"] == "en" and nm["language"]["paper"]["verdict"] == "mixed",
          "boundary_none_mixed: ascii leaves the all-digit examples out, paper counts them")

    r = classify(saeflow, FIXTURE)
    n = len(fixture)
    check(r.returncode == 0 and f"{n} features" in r.stdout and f"reproduces {n} of {n}" in r.stdout,
          f"summary: {r.returncode} {r.stdout} {r.stderr}")
    verdicts = [d["expect"]["paper"]["verdict"] for d in fixture.values()]
    line = next((ln for ln in r.stdout.splitlines() if ln.strip().startswith("paper")), "")
    want = [str(verdicts.count(v)) for v in ("en", "ja", "mixed")]
    check(line.split()[1:7:2] == want, f"summary paper line {line!r}, want en/ja/mixed {want}")

    # A feature_miner run directory means its features/.
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        os.makedirs(os.path.join(run, "features"))
        open(os.path.join(run, "summary.json"), "w").write("{}")
        with open(os.path.join(run, "features", "3.json"), "w") as f:
            json.dump({"token_act": [[[" cat", 9]]]}, f)
        r = classify(saeflow, "--json", run)
        check(r.returncode == 0 and json.loads(r.stdout)["language"]["paper"]["verdict"] == "en" and "label" not in json.loads(r.stdout),
              f"run directory: {r.returncode} {r.stdout} {r.stderr}")

        # Errors: the file and what is wrong, exit 1; usage errors exit 2.
        bad = {
            "not_json.json": ("{\"token_act\": [", "not readable JSON"),
            "no_token_act.json": ('{"tokens": []}', 'no "token_act" list'),
            "empty_example.json": ('{"token_act": [[]]}', "token_act[0] is empty"),
            "not_a_list.json": ('{"token_act": [7]}', "token_act[0] is not a list"),
            "not_pair.json": ('{"token_act": [[[" a", 1, 2]]]}', "token_act[0][0] is not a [token, act] pair"),
            "token_type.json": ('{"token_act": [[[3, 1]]]}', "token that is not a string"),
            "float_act.json": ('{"token_act": [[[" a", 0.5]]]}', "not an integer"),
            "nul.json": ('{"token_act": [[["a\\u0000b", 1]]]}', "U+0000"),
        }
        for name, (text, msg) in bad.items():
            d = os.path.join(tmp, name[:-5])
            os.makedirs(d)
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
            r = classify(saeflow, "--json", d)
            check(r.returncode == 1 and name in r.stderr and msg in r.stderr, f"{name}: exit {r.returncode}, {r.stderr!r}")
        empty = os.path.join(tmp, "empty")
        os.makedirs(empty)
        open(os.path.join(empty, "notes.txt"), "w").write("x")
        r = classify(saeflow, empty)
        check(r.returncode == 1 and "no feature files" in r.stderr, f"empty directory: {r.returncode} {r.stderr!r}")
        r = classify(saeflow, os.path.join(tmp, "missing"))
        check(r.returncode == 1 and "cannot read directory" in r.stderr, f"missing directory: {r.returncode} {r.stderr!r}")
    r = classify(saeflow)
    check(r.returncode == 2 and "usage" in r.stderr, f"no DIR: {r.returncode} {r.stderr!r}")
    r = classify(saeflow, "--frobnicate", FIXTURE)
    check(r.returncode == 2 and "unknown option --frobnicate" in r.stderr, f"bad option: {r.returncode} {r.stderr!r}")
    r = classify(saeflow, "--help")
    check(r.returncode == 0 and "usage: saeflow classify" in r.stdout, f"--help: {r.returncode}")

    for m in failures:
        print("FAIL:", m)
    print(f"{len(fixture)} fixture files; {'FAIL' if failures else 'ok'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
