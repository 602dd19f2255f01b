#!/usr/bin/python3
"""Cross-lingual (pairs) on the real demo data: an SAE trained on the suite's last checkpoint
(pipelines/demo-train.flow, reduced), then pipelines/demo-pairs.flow on the bundled corpus, and
again on a control corpus: the same rows with the pairing deranged (each English section paired
with another pair's Japanese section, seeded), so the stream and every activation are the same and
only the pairing differs (and so, since a side's tokens are judged against the other language's,
not its partner's, does each feature's firing per section). Under that control the null holds by construction: at a family-wise 1%
no feature may pass (we allow 2); with the true pairs features must (at least 10), and more than
under the control in the all-tokens count too. `saeflow report` shows the share from the run's own
summary and, for a mining run without one, from RUN/../pairs/summary.json; a pairs run of another
SAE there is an error.
usage: test_pairs_demo.py SAEFLOW SOURCE_ROOT"""
import glob
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

saeflow, src = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
steps = sorted(os.path.basename(p) for p in glob.glob(os.path.join(src, "data/suite/step-*")))
corpus = os.path.join(src, "data/corpus/debian-docs.jsonl.gz")
if not steps or not os.path.exists(corpus):
    print("skipped: no data/suite checkpoints or corpus")
    sys.exit(77)
step = steps[-1]
tmp = tempfile.mkdtemp(prefix="sf-pairs-demo-")
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def run(flow, *args):
    r = subprocess.run([saeflow, "run", os.path.join(src, "pipelines", flow), *args], cwd=src, capture_output=True,
                       text=True, timeout=600)
    if r.returncode:
        print(r.stderr[-3000:])
    return r


runs = os.path.join(tmp, "runs")
r = run("demo-train.flow", f"step={step}", "seed=11", f"runs={runs}", "docs=800", "seqs_per_doc=6",
        "train_tokens=250000", "batch=512", "warmup=20")
check(r.returncode == 0, f"an SAE for {step} (demo-train.flow, reduced)")
if r.returncode:
    sys.exit(1)

# The control: the same rows, the Japanese sides deranged among the pairs.
rows = [json.loads(l) for l in gzip.open(corpus, "rt")]
by_id = {x["id"]: x for x in rows}
en = sorted(x["id"] for x in rows if x["pair"] and x["lang"] == "en")
ja = [by_id[e]["pair"] for e in en]
perm = list(range(len(en)))
random.Random(5).shuffle(perm)
shifted = {en[perm[i]]: ja[perm[(i + 1) % len(perm)]] for i in range(len(perm))}  # a derangement
for e, j in shifted.items():
    by_id[e]["pair"], by_id[j]["pair"] = j, e
check(sum(shifted[e] == by_id_j for e, by_id_j in zip(en, ja)) == 0 and len(set(shifted.values())) == len(en),
      f"control corpus: all {len(en)} pairs deranged")
control = os.path.join(tmp, "mispaired.jsonl.gz")
with gzip.open(control, "wt") as f:
    for x in rows:
        f.write(json.dumps(x, ensure_ascii=False) + "\n")
runs2 = os.path.join(tmp, "control")
os.makedirs(os.path.join(runs2, step))
os.symlink(os.path.join(runs, step, "sae"), os.path.join(runs2, step, "sae"))

r1 = run("demo-pairs.flow", f"step={step}", f"runs={runs}")
r2 = run("demo-pairs.flow", f"step={step}", f"runs={runs2}", f"corpus={control}")
check(r1.returncode == 0 and r2.returncode == 0, "demo-pairs.flow on the true and on the deranged pairs")
if r1.returncode or r2.returncode:
    sys.exit(1)
true = json.load(open(os.path.join(runs, step, "pairs", "summary.json")))
ctrl = json.load(open(os.path.join(runs2, step, "pairs", "summary.json")))
pt, pc = true["pairs"], ctrl["pairs"]
print(f"true pairs: {pt['cross_lingual']} of {pt['alive']} alive ({pt['features_tested']} tested), all tokens "
      f"{pt['cross_lingual_all_tokens']}; deranged: {pc['cross_lingual']} ({pc['features_tested']} tested), all tokens "
      f"{pc['cross_lingual_all_tokens']}")
check(pt["pairs_mined"] == 877 and pc["pairs_mined"] == 877 and pt["sides_mined_alone"] == 0,
      "both sides of all 877 pairs mined")
check(true["tokens"] == ctrl["tokens"] and true["alive"] == ctrl["alive"], "the two runs mined the same stream")
fires_t = {x["id"]: x["pairs"]["fires"] for x in true["features"]}
fires_c = {x["id"]: x["pairs"]["fires"] for x in ctrl["features"]}
check(fires_t == fires_c and pt["features_tested"] == pc["features_tested"],
      "each section's firing does not depend on the pairing (the tokens excluded are the other language's, not the "
      "partner's), so the deranged run tests the same fire counts")
check(pc["cross_lingual"] <= 2 and pc["cross_lingual_all_tokens"] <= 2,
      f"deranged pairs: at most 2 features pass (the null holds; family-wise 1%): {pc['cross_lingual']}, "
      f"all tokens {pc['cross_lingual_all_tokens']}")
check(pt["cross_lingual"] >= 10 and pt["cross_lingual_all_tokens"] > pt["cross_lingual"],
      f"true pairs: at least 10 features pass ({pt['cross_lingual']}), more over all tokens ({pt['cross_lingual_all_tokens']})")
rows_t = {x["id"]: x["pairs"] for x in true["features"]}
ok = all(p["cross_lingual"] == (p["tested"] and p["p_exact"] <= pt["threshold"]) for p in rows_t.values())
check(ok and sum(p["cross_lingual"] for p in rows_t.values()) == pt["cross_lingual"]
      and abs(pt["share"] - pt["cross_lingual"] / true["alive"]) < 1e-9,
      "every row follows the rule and the counts add up to the share")

# The report: from the run's own summary, and beside a mining run (RUN/../pairs/summary.json).
rep = os.path.join(tmp, "report")
feat = os.path.join(runs, step, "features")
os.makedirs(feat)
plain = {k: v for k, v in true.items() if k != "pairs"}
plain["features"] = [{k: v for k, v in x.items() if k != "pairs"} for x in true["features"]]
json.dump(plain, open(os.path.join(feat, "summary.json"), "w"))
r = subprocess.run([saeflow, "report", os.path.join(runs, step, "pairs"), feat, "--out", rep, "--no-match"],
                   capture_output=True, text=True, timeout=120)
check(r.returncode == 0, "saeflow report on the pairs run and a mining run beside it" + ("" if r.returncode == 0 else ": " + r.stderr[-800:]))
if r.returncode == 0:
    rj = json.load(open(os.path.join(rep, "report.json")))
    check([x["cross_lingual_pairs"] for x in rj] == [pt["share"]] * 2
          and rj[1]["pairs_source"].endswith(os.path.join(step, "features", "..", "pairs", "summary.json")),
          f"report.json: the share {pt['share']:.4f} for both, the second from ../pairs ({rj[1]['pairs_source']})")
    check(f"{100 * pt['share']:.1f}%" in r.stdout, "the printed table shows it")
plain["sae"] = "/elsewhere/sae"
json.dump(plain, open(os.path.join(feat, "summary.json"), "w"))
r = subprocess.run([saeflow, "report", feat, "--out", rep, "--no-match"], capture_output=True, text=True, timeout=120)
check(r.returncode != 0 and "not this run's" in r.stderr, f"a pairs run of another SAE is refused: {r.stderr.strip()[-300:]}")

if failures:
    print(f"{failures} failure(s); files kept in {tmp}")
    sys.exit(1)
shutil.rmtree(tmp)
