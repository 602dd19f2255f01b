#!/usr/bin/python3
"""sae_trainer / sae_eval through real pipelines (tensor_gen -> sae_trainer):

- an out_dir with missing parents is created;
- a run trains, writes metrics with a falling loss, the paper layout and both exports, whose
  tensors agree with each other (names, shapes, transposes) and with the layouts other tools read;
- stopping early (max_tokens) then resuming gives a model bit-identical to an uninterrupted run;
  so does an interrupt (SIGINT) in the middle of a run, then a resume;
- `saeflow sae info` loads all three layouts; sae_eval writes sane statistics;
- a finished SAE is refused without overwrite, replaced whole with it;
- a run that receives no activations, or fewer rows than one batch, fails naming it and writes no
  SAE (no out_dir, no OUT.partial; a finished SAE it was to replace stays as it was);
- an interrupted overwrite run is resumed in OUT.partial and then replaces the SAE.

  test_stage.py SAEFLOW_EXE
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

SAEFLOW = os.path.abspath(sys.argv[1])
BATCH, MSGS, ROWS, D, N, K = 256, 120, 64, 32, 256, 8  # 30 steps

PIPELINE = """
set out = out
set max = 0
set resume = false
set overwrite = false
set delay = 0
set ckpt_every = 7
set count = %d
stage gen = tensor_gen {
    count = ${count}
    rows = %d
    cols = %d
    seed = 5
    delay_us = ${delay}
}
stage sae = sae_trainer {
    input = gen
    field = tensor
    out_dir = "${out}"
    latents = %d
    k = %d
    batch = %d
    warmup_steps = 5
    metrics_every = 5
    checkpoint_every = ${ckpt_every}
    max_tokens = ${max}
    resume = ${resume}
    overwrite = ${overwrite}
    k_aux = 8
    dead_tokens = 256
    export = "sparsify,saelens"
}
""" % (MSGS, ROWS, D, N, K, BATCH)

EVAL = """
set dir = full
set out = eval.json
set count = 40
stage gen = tensor_gen {
    count = ${count}
    rows = 64
    cols = %d
    seed = 9
}
stage ev = sae_eval {
    input = gen
    field = tensor
    sae_dir = "${dir}"
    out = "${out}"
}
""" % D


def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, h in header.items():
        dt = {"F32": np.float32, "I64": np.int64}[h["dtype"]]
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype=dt).reshape(h["shape"])
    return out, meta


def run(tmp, *overrides, expect=0, env=None):
    p = subprocess.run([SAEFLOW, "run", os.path.join(tmp, "p.sf"), "--no-progress", *overrides],
                       cwd=tmp, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, **env) if env else None)
    if p.returncode != expect:
        sys.exit(f"saeflow exited {p.returncode} (expected {expect}):\n{p.stderr}")
    return p.stderr


def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)
    print("ok:", what)


def main():
    stages = subprocess.run([SAEFLOW, "stages", "--list"], capture_output=True, text=True).stdout
    if "tensor_gen" not in stages or "sae_trainer" not in stages:
        print("SKIP: saeflow has no tensor_gen / sae_trainer stage (configure with the testing stages)")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="sae_stage_")
    with open(os.path.join(tmp, "p.sf"), "w") as f:
        f.write(PIPELINE)
    with open(os.path.join(tmp, "eval.sf"), "w") as f:
        f.write(EVAL)

    # 0. An out_dir whose parents do not exist yet (a fresh live pipeline: nothing made them) is created.
    run(tmp, "out=fresh/runs/step-1/sae", f"max={2 * BATCH}")
    check(os.path.exists(os.path.join(tmp, "fresh/runs/step-1/sae/model.safetensors")),
          "the trainer creates the missing parents of out_dir")

    # 1. One uninterrupted run.
    run(tmp, "out=full")
    full = os.path.join(tmp, "full")
    rows = [l.split(",") for l in open(os.path.join(full, "metrics.csv")).read().split("\n")[1:] if l]
    check(len(rows) == 6 and rows[-1][0] == "30", "metrics.csv has a line every 5 steps up to step 30")
    losses = [float(r[2]) for r in rows]
    check(losses[-1] < 0.9 * losses[0], f"loss falls ({losses[0]:.4g} -> {losses[-1]:.4g})")
    jl = [json.loads(l) for l in open(os.path.join(full, "metrics.jsonl"))]
    check(len(jl) == 6 and all(0 < j["cosine"] <= 1 and j["l0"] <= K for j in jl), "metrics.jsonl sane")
    check(any(j["aux"] > 0 for j in jl), "AuxK active once latents die (dead_tokens 256)")

    cfg = json.load(open(os.path.join(full, "config.json")))
    check(cfg["d_in"] == D and cfg["num_latents"] == N and cfg["k"] == K and cfg["model_type"] == "topk_sae",
          "paper config.json {d_in, num_latents, k, model_type}")
    check(cfg["saeflow_training"]["steps"] == 30 and cfg["saeflow_training"]["complete"], "training metadata")
    paper, meta = read_st(os.path.join(full, "model.safetensors"))
    check(set(paper) == {"encoder.weight", "encoder.bias", "decoder.weight", "b_dec"} and
          paper["encoder.weight"].shape == (N, D) and paper["decoder.weight"].shape == (D, N),
          "paper model.safetensors names and shapes")
    norms = np.linalg.norm(paper["decoder.weight"], axis=0)
    check(np.allclose(norms, 1, atol=1e-5), "decoder directions have unit norm")
    sp, _ = read_st(os.path.join(full, "sparsify", "sae", "sae.safetensors"))
    spcfg = json.load(open(os.path.join(full, "sparsify", "sae", "cfg.json")))
    check(set(sp) == {"encoder.weight", "encoder.bias", "W_dec", "b_dec"} and spcfg["d_in"] == D
          and spcfg["k"] == K, "sparsify cfg.json + sae.safetensors names")
    check(np.array_equal(sp["W_dec"], paper["decoder.weight"].T) and
          np.array_equal(sp["encoder.weight"], paper["encoder.weight"]), "sparsify W_dec = decoder.weight^T")
    sl, _ = read_st(os.path.join(full, "saelens", "sae_weights.safetensors"))
    slcfg = json.load(open(os.path.join(full, "saelens", "cfg.json")))
    check(set(sl) == {"W_enc", "W_dec", "b_enc", "b_dec"} and slcfg["d_sae"] == N and
          slcfg["architecture"] == "topk" and slcfg["metadata"]["sae_lens_version"] >= "6",
          "SAELens cfg.json + sae_weights.safetensors")
    # a unit-normalised SAE goes to SAELens' constant_norm_rescale (x sqrt(d) / ||x||): weights scaled by sqrt(d)
    s = np.float32(np.sqrt(D))
    check(slcfg["normalize_activations"] == "constant_norm_rescale" and
          np.allclose(sl["W_enc"] * s, paper["encoder.weight"].T, rtol=1e-6, atol=1e-7) and
          np.allclose(sl["W_dec"] / s, sp["W_dec"], rtol=1e-6, atol=1e-7)
          and np.array_equal(sl["b_enc"], paper["encoder.bias"]), "SAELens W_enc = encoder.weight^T / sqrt(d)")
    for sub in ["", "sparsify/sae", "saelens"]:
        p = subprocess.run([SAEFLOW, "sae", "info", os.path.join(full, sub)], capture_output=True, text=True)
        check(p.returncode == 0 and f"d_in {D}\nnum_latents {N}\nk {K}\nnormalize unit" in p.stdout,
              f"saeflow sae info reads {sub or 'the paper layout'}")

    # 2. Stop after 12 steps (max_tokens), then resume: identical to the uninterrupted run.
    log = run(tmp, "out=two", f"max={12 * BATCH}", "--progress")  # live lines, though not a terminal
    _, m1 = read_st(os.path.join(tmp, "two", "checkpoint.safetensors"))
    check(m1["step"] == "12", "the first part stops at step 12")
    last = json.loads(open(os.path.join(tmp, "two", "metrics.jsonl")).read().splitlines()[-1])
    note = f"step 12 loss {last['loss']:.4g} fvu {last['fvu']:.4f} L0 {last['l0']:.1f} dead"
    check(note in log, f"the live progress line shows the last metrics ({note!r})")
    # The second part on one thread (pool and OpenBLAS): results must not depend on the threads.
    log = run(tmp, "out=two", "resume=true", env={"SAE_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    check("resuming at step 12" in log, "the second part resumes at step 12")
    same = open(os.path.join(tmp, "two", "model.safetensors"), "rb").read() == \
        open(os.path.join(full, "model.safetensors"), "rb").read()
    check(same, "stop + resume (on 1 thread) gives a model.safetensors byte-identical to the uninterrupted run")
    ck_full, _ = read_st(os.path.join(full, "checkpoint.safetensors"))
    ck_two, _ = read_st(os.path.join(tmp, "two", "checkpoint.safetensors"))
    check(all(np.array_equal(ck_full[k], ck_two[k]) for k in ck_full if k != "since_fired"),
          "... and identical Adam moments")

    # 3. SIGINT mid-run, then resume. No periodic checkpoints: the one found must be SIGINT's.
    p = subprocess.Popen([SAEFLOW, "run", "p.sf", "--no-progress", "out=int", "delay=40000", "ckpt_every=0"],
                         cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ck = os.path.join(tmp, "int", "checkpoint.safetensors")
    metrics = os.path.join(tmp, "int", "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(metrics) and open(metrics).read().count("\n") >= 1):
        time.sleep(0.05)  # the first metrics line: step 5 is done
    check(not os.path.exists(ck), "no checkpoint before the interrupt (checkpoint_every=0)")
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    check(os.path.exists(ck), "SIGINT saves a checkpoint" + ("" if os.path.exists(ck) else ":\n" + err))
    _, mi = read_st(ck)
    cfg_int = json.load(open(os.path.join(tmp, "int", "config.json")))
    check(5 <= int(mi["step"]) < 30 and not cfg_int["saeflow_training"]["complete"],
          f"interrupted at step {mi['step']}, model marked incomplete ({p.returncode=})")
    run(tmp, "out=int", "resume=true")
    same = open(os.path.join(tmp, "int", "model.safetensors"), "rb").read() == \
        open(os.path.join(full, "model.safetensors"), "rb").read()
    check(same, "SIGINT + resume gives a byte-identical model")

    # 4. Held-out evaluation of the trained model.
    ev = os.path.join(tmp, "eval.json")
    subprocess.run([SAEFLOW, "run", os.path.join(tmp, "eval.sf"), "--no-progress", f"dir={full}", f"out={ev}"],
                   check=True, capture_output=True, timeout=120)
    r = json.load(open(ev))
    check(r["tokens"] == 40 * 64 and 0 < r["fvu"] < 1 and 0 < r["cosine"] <= 1 and r["l0"] <= K
          and 0 <= r["dead_fraction"] <= 1, f"eval.json: {r}")
    check(abs(r["fvu"] - jl[-1]["fvu"]) < 0.25, "held-out FVU near the last training FVU")
    none = os.path.join(tmp, "eval-none.json")
    p = subprocess.run([SAEFLOW, "run", os.path.join(tmp, "eval.sf"), "--no-progress", f"dir={full}", f"out={none}",
                        "count=0"], capture_output=True, text=True, timeout=120)
    check(p.returncode == 1 and "no activations arrived (0 tokens): nothing evaluated" in p.stderr and
          not os.path.exists(none), "sae_eval of an empty stream fails, writes no eval.json")

    # 5. A new, shorter run into the finished SAE's directory is refused (it used to replace it
    # silently); with overwrite = true it trains beside it (full.partial) and replaces it whole.
    model = model30 = open(os.path.join(full, "model.safetensors"), "rb").read()
    err = run(tmp, "out=full", "max=2048", expect=1)
    check("already holds an SAE" in err and "overwrite = true" in err and
          open(os.path.join(full, "model.safetensors"), "rb").read() == model, f"a second run was not refused: {err}")
    open(os.path.join(full, "stale-file"), "w").write("from the first run")
    run(tmp, "out=full", "max=2048", "overwrite=true")
    cfg = json.load(open(os.path.join(full, "config.json")))["saeflow_training"]
    steps = [l.split(",")[0] for l in open(os.path.join(full, "metrics.csv")).read().split("\n")[1:] if l]
    check(cfg["steps"] == 8 and cfg["complete"] and steps[-1] == "8" and
          not os.path.exists(os.path.join(full, "stale-file")) and not os.path.exists(full + ".partial"),
          f"overwrite = true replaced the SAE whole ({cfg['steps']} steps, metrics to step {steps[-1]})")

    # 6. Nothing to train on is an error, and no SAE: it used to warn, exit 0 and leave out_dir
    # (with an empty metrics.csv) behind.
    err = run(tmp, "out=none/sae", "count=0", expect=1)
    ok = "no activations arrived (0 rows): nothing trained, no SAE written to none/sae" in err and \
        not os.path.exists(os.path.join(tmp, "none", "sae"))
    check(ok, "zero activations: an error, no out_dir left" + ("" if ok else ":\n" + err))
    err = run(tmp, "out=few", "count=2", expect=1)
    ok = f"128 activation rows arrived, fewer than one batch ({BATCH}): nothing trained" in err and \
        not os.path.exists(os.path.join(tmp, "few"))
    check(ok, "fewer rows than a batch: an error, no out_dir left" + ("" if ok else ":\n" + err))
    model = open(os.path.join(full, "model.safetensors"), "rb").read()
    err = run(tmp, "out=full", "count=0", "overwrite=true", expect=1)
    check("no activations arrived" in err and not os.path.exists(full + ".partial") and
          open(os.path.join(full, "model.safetensors"), "rb").read() == model,
          "an overwrite that received nothing leaves the finished SAE as it was, and no full.partial")

    # 7. An overwrite run interrupted (SIGINT) keeps its checkpoint in full.partial, the finished SAE
    # untouched; resume = true continues it there and swaps it in: the 30-step model of run 1.
    p = subprocess.Popen([SAEFLOW, "run", "p.sf", "--no-progress", "out=full", "overwrite=true", "delay=40000",
                          "ckpt_every=0"], cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(full + ".partial", "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(metrics) and open(metrics).read().count("\n") >= 1):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=120)
    check(os.path.exists(os.path.join(full + ".partial", "checkpoint.safetensors")) and
          open(os.path.join(full, "model.safetensors"), "rb").read() == model,
          "an interrupted overwrite run keeps its checkpoint in full.partial and the finished SAE as it was")
    log = run(tmp, "out=full", "resume=true")
    check("continuing the interrupted overwrite run" in log and not os.path.exists(full + ".partial") and
          open(os.path.join(full, "model.safetensors"), "rb").read() == model30,
          "resume = true completes it in full.partial and swaps it in, byte-identical to the uninterrupted run")
    shutil.rmtree(tmp)
    print("all stage checks passed")


if __name__ == "__main__":
    main()
