#!/usr/bin/python3
"""A sweep over two checkpoints, through real pipelines: the planted activations are written to
activation shards (zmq_in -> shard_writer), then `saeflow run --sweep ckpt=...` runs
stages/feature_miner/mine_shards.saeflow (shard_source -> feature_miner) per checkpoint, twice for
the paper's two passes, and `saeflow report` goes over both. Mining from shards must give what the
stage gives on the messages directly (fm_drive): the same features, maxima, densities and examples
(the shuffled order hashes doc_id and pos, which the shards keep).
usage: test_sweep.py SAEFLOW_EXE FM_DRIVE   (77 without the shards/bridge stages or pyzmq)
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

try:
    import zmq
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

import planted

SAEFLOW, DRIVE = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))


def main():
    listed = subprocess.run([SAEFLOW, "stages", "--list"], capture_output=True, text=True).stdout
    missing = [st for st in ("zmq_in", "shard_writer", "shard_source", "feature_miner") if f"  {st} " not in listed]
    if missing:
        print(f"skip: stages not built: {missing}")
        return 77
    tmp = tempfile.mkdtemp(prefix="fm_sweep_")
    fx = planted.make(tmp)
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    # Shards of the planted activations, split "test", for two checkpoints (the same data).
    shards = os.path.join(tmp, "shards")
    ep = f"ipc://{tmp}/in"
    pipe = os.path.join(tmp, "write.saeflow")
    with open(pipe, "w") as f:
        f.write(f'stage src = zmq_in {{\n    endpoint = "{ep}"\n}}\n'
                f'stage w = shard_writer {{\n    input = src\n    dir = "{shards}"\n}}\n')
    proc = subprocess.Popen([SAEFLOW, "run", pipe, "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(ep)
    with open(fx["msgs_path"], "rb") as f:
        while hdr := f.read(4):
            push.send(f.read(struct.unpack("<I", hdr)[0]))
    push.send(b"")
    log, _ = proc.communicate(timeout=120)
    push.close(0)
    ctx.term()
    check(proc.returncode == 0, f"shard_writer pipeline: {log}")
    runs = os.path.join(tmp, "runs")
    for ck in ("ckpt_a", "ckpt_b"):
        os.makedirs(os.path.join(runs, ck))
        shutil.copytree(shards, os.path.join(runs, ck, "acts"))
        shutil.copytree(fx["sae_dir"], os.path.join(runs, ck, "sae"))
    for sampling in ("paper-max", "paper"):  # the paper's two passes, each a sweep
        r = subprocess.run([SAEFLOW, "run", os.path.join(ROOT, "stages", "feature_miner", "mine_shards.saeflow"),
                            "--no-progress", "--sweep", "ckpt=ckpt_a,ckpt_b", f"runs={runs}",
                            f"tokenizer={fx['vocab_path']}", f"sampling={sampling}"],
                           capture_output=True, text=True, timeout=300)
        check(r.returncode == 0, f"saeflow run --sweep sampling={sampling} exit {r.returncode}: {r.stdout}\n{r.stderr}")
        if r.returncode:
            break
    if r.returncode == 0:
        r = subprocess.run([SAEFLOW, "report", os.path.join(runs, "ckpt_a"), os.path.join(runs, "ckpt_b"),
                            "--out", os.path.join(runs, "report")], capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, f"saeflow report exit {r.returncode}: {r.stdout}\n{r.stderr}")
    check(os.path.exists(os.path.join(runs, "report", "report.html")), "no report.html")

    # The same sequences through fm_drive, for comparison, in the messages as written (other sizes than
    # shard_source's batches of 32: the SAE encodes sequence by sequence, so the grouping must not matter).
    direct = os.path.join(tmp, "direct")
    for sampling in ("paper-max", "paper"):
        d = subprocess.run([DRIVE, "stage", fx["msgs_path"], f"sae={fx['sae_dir']}", f"out={direct}",
                            f"tokenizer={fx['vocab_path']}", "html=false", f"sampling={sampling}"],
                           capture_output=True, text=True)
        check(d.returncode == 0, f"fm_drive sampling={sampling}: {d.stderr}")
    if r.returncode == 0 and d.returncode == 0:
        with open(os.path.join(direct, "summary.json")) as f:
            want = json.load(f)
        with open(os.path.join(runs, "ckpt_a", "feature_miner", "summary.json")) as f:
            got = json.load(f)
        check(got["tokens"] == want["tokens"], f"tokens {got['tokens']} != {want['tokens']}")
        check([f["id"] for f in got["features"]] == [f["id"] for f in want["features"]], "alive features differ")
        for g, w in zip(got["features"], want["features"]):
            check(g["max_act"] == w["max_act"] and g["density"] == w["density"], f"f{g['id']} max/density differ")
            with open(os.path.join(runs, "ckpt_a", "feature_miner", "features", f"{g['id']}.json")) as f:
                ge = [(e["doc_id"], e["peak"]) for e in json.load(f)["examples"]]
            with open(os.path.join(direct, "features", f"{g['id']}.json")) as f:
                we = [(e["doc_id"], e["peak"]) for e in json.load(f)["examples"]]
            check(ge == we, f"f{g['id']} examples differ: {ge} vs {we}")
        with open(os.path.join(runs, "report", "report.json")) as f:
            rep = json.load(f)
        m = rep[1].get("match_previous", {})
        check(m.get("persist") == want["alive"] and m.get("appear") == 0 and m.get("vanish") == 0 and
              m.get("same_index") == want["alive"], f"identical SAEs should match one to one: {m}")

    for msg in failures:
        print("FAIL:", msg)
    print("ok" if not failures else "FAIL")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
