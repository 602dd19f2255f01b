#!/usr/bin/env python3
"""The demo, reduced, pointed at a suite laid out as another user's would be: two checkpoints of
data/suite as folders of other names (found because they hold a config.json; a folder without one
is not a checkpoint), each with its own tokenizer and none at the suite's top (the flows fall back
to the checkpoint's), LAYER=1 instead of the middle block. tools/demo.sh trains an SAE live from
the forward stage, evaluates and mines on the test split with the paper's two-pass sampling, reports; every artefact must exist and
agree with the others. First the mistakes a new user makes get a message saying what to set. Runs
in BUILD_ROOT (demo.sh's BUILD); the run directory is removed when everything passes.
Usage: test_demo.py SOURCE_ROOT BUILD_ROOT"""
import glob, json, os, shutil, subprocess, sys, tempfile

src, build = sys.argv[1], sys.argv[2]
orig = sorted(os.path.basename(p) for p in glob.glob(os.path.join(src, "data/suite/step-*")))
if len(orig) < 2:
    print("skipped: data/suite has fewer than two checkpoints")
    sys.exit(77)
runs = tempfile.mkdtemp(prefix="sf-demo-")
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


# Another user's suite: checkpoint folders named otherwise, each with its tokenizer; a notes folder.
suite = os.path.join(runs, "suite")
steps = ["ckpt-a", "ckpt-b"]
for name, step in zip(steps, (orig[0], orig[-1])):
    os.makedirs(os.path.join(suite, name))
    for f in ("config.json", "model.safetensors"):
        os.symlink(os.path.join(src, "data/suite", step, f), os.path.join(suite, name, f))
    os.symlink(os.path.join(src, "data/suite/tokenizer.json"), os.path.join(suite, name, "tokenizer.json"))
os.makedirs(os.path.join(suite, "notes"))
base = dict(os.environ, RUNS=os.path.join(runs, "out"), BUILD=os.path.abspath(build))
base.pop("STEPS", None), base.pop("LAYER", None), base.pop("TOKENIZER", None)
empty = os.path.join(runs, "empty")
os.makedirs(empty)
for what, env, words in (("a suite without checkpoint folders", dict(SUITE=empty), ["no checkpoint folders", "set SUITE"]),
                         ("a suite that does not exist", dict(SUITE=empty + "/nope"), ["is not a folder", "set SUITE"]),
                         ("STEPS naming no checkpoint", dict(SUITE=suite, STEPS="step-000000"), ["STEPS names step-000000"]),
                         ("no tokenizer anywhere", dict(SUITE=os.path.join(src, "data/suite/reference"), STEPS="sae", LAYER="1"),
                          ["no tokenizer for sae", "set TOKENIZER"])):
    r = subprocess.run([os.path.join(src, "tools/demo.sh")], cwd=src, env=dict(base, **env), capture_output=True, text=True,
                       timeout=60)
    check(r.returncode == 2 and all(w in r.stderr for w in words) and "cannot access" not in r.stderr + r.stdout,
          f"{what}: exit 2 and a message saying what to set: {r.stderr.strip()[-300:]}")

runs_out = base["RUNS"]
env = dict(base, SUITE=suite, LAYER="1",
           TRAIN_ARGS="docs=300 seqs_per_doc=4 train_tokens=60000 batch=512 warmup=20", MINE_ARGS="docs=120 seqs_per_doc=2")
r = subprocess.run([os.path.join(src, "tools/demo.sh")], cwd=src, env=env, capture_output=True, text=True, timeout=900)
check(r.returncode == 0, f"tools/demo.sh on {suite} exits 0" + ("" if r.returncode == 0 else ":\n" + r.stderr[-2000:]))
check(f"== suite {suite}: 2 checkpoints (ckpt-a ckpt-b), SAEs on resid_post.1" in r.stdout,
      "the checkpoint folders are found by their config.json (not the notes folder), in order")
check(f"== building in {env['BUILD']}" in r.stdout and not os.path.exists(os.path.join(runs_out, "build")),
      f"the demo builds in the test's build directory {build}")
check(os.path.join(runs_out, "report", "report.html") in r.stdout, "the demo prints the HTML report's path")
check(r.stderr.count("ckpt-a/tokenizer.json: ") + r.stderr.count("ckpt-b/tokenizer.json: ") >= 2,
      "the tokenizer stages use each checkpoint's own tokenizer.json")
# the held-out evaluation once per checkpoint: pass 1 of the paper's sampling runs without it
evals = [l for l in r.stderr.splitlines() if "[eval] info: eval over" in l]
check(len(evals) == len(steps) and all(sum(f"/{s}/eval.json" in l for l in evals) == 1 for s in steps),
      f"sae_eval runs once per checkpoint ({len(evals)} evaluations for {len(steps)} checkpoints)")
table = [l for l in r.stdout.splitlines() if l.startswith("| ckpt-")]
check([l.split("|")[1].strip() for l in table] == steps, f"the printed table has one row per checkpoint: {steps}")
runs = runs_out

report = json.load(open(os.path.join(runs, "report", "report.json")))
check([c["checkpoint"] for c in report] == steps, "report.json lists the checkpoints in order")
seeds = [json.load(open(os.path.join(runs, s, "sae", "config.json")))["saeflow_training"]["seed"] for s in steps]
check(len(set(seeds)) == len(seeds), f"every checkpoint's SAE has its own initialisation seed {seeds}")
m = report[1].get("match_previous", {})
# With a shared seed these barely trained SAEs keep their common initialisation: nearly every
# persisting feature would match the one of the same index.
check({"same_index", "chance_persist"} <= m.keys() and m["same_index"] <= max(2, 0.1 * m["persist"]),
      f"matching is not the shared initialisation: {m.get('same_index')} of {m.get('persist')} persisting features keep their index")
def ev_loss(step):
    return json.load(open(os.path.join(runs, step, "eval.json")))["loss"]


for step, row in zip(steps, report):
    sae = os.path.join(runs, step, "sae")
    cfg = json.load(open(os.path.join(sae, "config.json")))
    check(cfg["saeflow_training"]["hook"] == "resid_post.1", f"{step}: trained on LAYER=1's resid_post.1")
    pairs = json.load(open(os.path.join(runs, step, "pairs", "summary.json")))["pairs"]
    check(pairs["pairs_mined"] == 877 and row["cross_lingual_pairs"] == pairs["share"]
          and row["pairs_source"].endswith(os.path.join(step, "features", "..", "pairs", "summary.json")),
          f"{step}: cross-lingual (pairs) on all 877 pairs, its share {pairs['share']:.4f} in the report")
    check(row["lm_loss"] == ev_loss(step) and row["lm_loss_increase"] is not None, f"{step}: the report has the LM loss")
    check(os.path.getsize(os.path.join(sae, "model.safetensors")) > 0 and cfg["k"] == 32 and cfg["num_latents"] == 16 * cfg["d_in"],
          f"{step}: SAE saved in the paper's layout (d_in {cfg['d_in']}, {cfg['num_latents']} latents, k 32)")
    summary = json.load(open(os.path.join(runs, step, "features", "summary.json")))
    alive = summary["alive"]
    check(alive + summary["dead_in_stream"] == summary["n_features"] == cfg["num_latents"], f"{step}: alive + dead = latents ({alive} alive)")
    files = glob.glob(os.path.join(runs, step, "features", "features", "*.json"))
    check(len(files) == alive == len(summary["features"]), f"{step}: one feature JSON per alive feature ({len(files)})")
    for rule in ("paper", "ascii", "script", "label"):
        check(sum(summary["language"][rule].values()) == alive, f"{step}: language verdicts ({rule}) cover every alive feature")
        check(abs(sum(row["language_" + rule].values()) - 1) < 1e-9, f"{step}: report's {rule} language shares sum to 1")
    check(sum(summary["granularity"].values()) == alive and abs(sum(row["granularity"].values()) - 1) < 1e-9,
          f"{step}: granularity classes cover every alive feature, shares sum to 1")
    f = json.load(open(sorted(files)[0]))
    ex = f["token_act"]
    check(isinstance(ex, list) and ex and all(isinstance(t, str) and 0 <= q <= 10 for e in ex for t, q in e),
          f"{step}: a feature file has the paper's token_act schema ({len(ex)} examples)")
    check(summary["params"]["sampling"] == "paper" and os.path.exists(os.path.join(runs, step, "features", "maxima.json"))
          and f["max_preact"] >= f["max_act"] and len(ex) == len(f["examples"]) <= 50
          and all(e["peak"] > f["threshold"] for e in f["examples"]),
          f"{step}: examples by the paper's sampling (pass 1's maxima.json, then at most 50 above 0.7 of the maximum pre-activation)")
    ev = json.load(open(os.path.join(runs, step, "eval.json")))
    check(row["fvu"] == ev["fvu"] and 0 <= ev["fvu"] < 1.5 and 0 <= row["dead_fraction"] <= 1,
          f"{step}: held-out FVU {ev['fvu']:.3f} in the report matches sae_eval's")
    check(ev["loss_tokens"] > 0 and abs(ev["loss_sae"] - ev["loss"] - ev["loss_increase"]) < 1e-9 and 0 < ev["loss"] < 10,
          f"{step}: held-out LM loss {ev['loss']:.3f}, {ev['loss_sae']:.3f} with the SAE spliced in")
    check(os.path.getsize(os.path.join(runs, step, "features", "index.html")) > 1000, f"{step}: HTML dashboard written")
print(f"{failures} failures")
if failures:
    print(f"the run is left in {runs}")
    sys.exit(1)
shutil.rmtree(os.path.dirname(runs))
