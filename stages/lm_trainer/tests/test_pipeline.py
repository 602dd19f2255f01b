#!/usr/bin/python3
"""checkpoint_run, and pipelines/lm-train.flow end to end.

checkpoint_run fed checkpoint messages through zmq_in: each starts `saeflow run` of a small pipeline
(tensor_gen -> verify_sink) with {step}, {checkpoint} and {dir} substituted, two at a time; every run
leaves its report and its log. A run that fails (an override the pipeline does not declare) fails the
stage, naming the checkpoint.

Then pipelines/lm-train.flow, shortened (12 steps, saves at 0, 10 and 12, 20 documents extracted per
checkpoint): the LM trains in C and every saved checkpoint's activations are extracted by another
saeflow process into a shard directory whose manifest names that checkpoint.

  test_pipeline.py SAEFLOW ROOT
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import msgpack
    import zmq
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

SAEFLOW, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def feed_run(tmp, args, msgs):
    endpoint = "ipc://" + os.path.join(tmp, "feed.ipc")
    flow = os.path.join(tmp, "runner.flow")
    with open(flow, "w") as f:
        f.write(f"""stage feed = zmq_in {{
    endpoint = "{endpoint}"
}}
stage each = checkpoint_run {{
    input = feed
    pipeline = "{tmp}/child.flow"
    args = "{args}"
    jobs = 2
    log_dir = "{tmp}/logs"
}}
""")
    p = subprocess.Popen([SAEFLOW, "run", flow, "--no-progress"], stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoint)
    for m in msgs:
        push.send(msgpack.packb(m, use_bin_type=True))
    push.send(b"")
    err = p.communicate(timeout=300)[1]
    push.close(0)
    ctx.term()
    return p.returncode, err


def main():
    tmp = tempfile.mkdtemp(prefix="lm_pipeline_")
    with open(os.path.join(tmp, "child.flow"), "w") as f:
        f.write("""set n = 1
set report = r.txt
stage gen = tensor_gen {
    count = ${n}
    rows = 2
    cols = 4
}
stage sink = verify_sink {
    input = gen
    expect = ${n}
    report = "${report}"
}
""")
    msgs = [{"path": f"{tmp}/lm/step-{s:06d}", "step": s, "tokens_seen": s * 64, "train_loss": 1.0}
            for s in (3, 5, 7)]
    rc, err = feed_run(tmp, "n={step} report={dir}-report-{checkpoint}.txt", msgs)
    check(rc == 0, "checkpoint_run ran a pipeline per checkpoint" + ("" if rc == 0 else ":\n" + err[-2000:]))
    for s in (3, 5, 7):
        rep = os.path.join(tmp, f"lm-report-step-{s:06d}.txt")
        text = open(rep).read() if os.path.exists(rep) else ""
        want = sum(range(s))
        check(text.split() == ["sink", str(s), str(want)], f"step {s}: its pipeline got {s} messages ({text.strip()!r})")
        check(os.path.getsize(os.path.join(tmp, "logs", f"step-{s:06d}.log")) > 0, f"step {s}: its log")
    rc, err = feed_run(tmp, "n={step} nosuchvar=1", msgs[:1])
    check(rc != 0 and "step-000003" in err and "checkpoint pipelines failed" in err,
          f"a failing pipeline fails the stage, naming the checkpoint: {err.strip().splitlines()[-1:]}")

    runs = os.path.join(tmp, "lt")
    p = subprocess.run([SAEFLOW, "run", "pipelines/lm-train.flow", f"runs={runs}", "steps=12", "save_steps=0,10,final",
                        "extract_docs=20", "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    check(p.returncode == 0, "pipelines/lm-train.flow ran" + ("" if p.returncode == 0 else ":\n" + p.stderr[-3000:]))
    saves = json.load(open(os.path.join(runs, "lm", "checkpoints.json"))) if p.returncode == 0 else []
    check([e["step"] for e in saves] == [0, 10, 12], f"checkpoints at 0, 10, 12: {[e['step'] for e in saves]}")
    for e in saves:
        man = os.path.join(runs, "extract", e["checkpoint"], "L2", "manifest.json")
        m = json.load(open(man)) if os.path.exists(man) else {}
        check(m.get("complete") is True and m.get("sequences", 0) > 0 and m.get("model") == e["path"] and
              m.get("checkpoint") == e["checkpoint"],
              f"{e['checkpoint']}: its activations extracted into shards recording it ({m.get('model')}, "
              f"{m.get('sequences')} sequences)")
    if failures:
        print(f"kept {tmp} for inspection", flush=True)
    else:
        shutil.rmtree(tmp)
    sys.exit(1 if failures else 0)


main()
