#!/usr/bin/env python3
"""OpenBLAS kernel choice, end to end: with a fake libopenblas.so.0 that reports Prescott (as Debian's
0.3.21 does on AVX-512 Xeons), saeflow must pick the kernel this CPU's flags (/proc/cpuinfo) call for,
set it before OpenBLAS loads, and log it, for `run` and for stage commands alike; an OPENBLAS_CORETYPE
the user set is kept, with the fake and with the real library.
Usage: test_blas_runtime.py SAEFLOW FAKE_OPENBLAS_DIR"""
import os, re, subprocess, sys, tempfile

saeflow, fake_dir = sys.argv[1], sys.argv[2]
failures = 0


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f"\n     {detail}"), flush=True)
    failures += 0 if cond else 1


flags = set()
for line in open("/proc/cpuinfo"):
    if line.startswith("flags"):
        flags = set(line.split(":", 1)[1].split())
        break
if {"avx512f", "avx512bw", "avx512vl"} <= flags: best = "SKYLAKEX"
elif {"avx2", "fma"} <= flags: best = "HASWELL"
elif "avx" in flags: best = "SANDYBRIDGE"
else: best = None

tmp = tempfile.mkdtemp(prefix="sf-blas-")
flow = os.path.join(tmp, "tiny.flow")
with open(flow, "w") as f:
    f.write("stage gen = tensor_gen {\n    count = 10\n}\nstage sink = verify_sink {\n    input = gen\n    expect = 10\n}\n")


def saeflow_run(args, lib_dir=None, coretype=None):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "LD_LIBRARY_PATH")}
    env["SAEFLOW_LOG"] = "info"
    if lib_dir: env["LD_LIBRARY_PATH"] = lib_dir
    if coretype: env["OPENBLAS_CORETYPE"] = coretype
    return subprocess.run([saeflow, *args], capture_output=True, text=True, env=env, timeout=120)


def verified(stderr):
    m = re.search(r"openblas: .*kernel (\S+) verified", stderr)
    return m.group(1) if m else None


commands = [(["run", flow, "--no-progress"], "run"), (["sae", "info", tmp], "sae info")]
for args, name in commands:
    r = saeflow_run(args, lib_dir=fake_dir)
    if best:
        check(f"detected kernel Prescott on a CPU with {best} features; using {best}" in r.stderr,
              f"{name}: fake OpenBLAS reports Prescott; saeflow logs it chose {best}", r.stderr[-600:])
        check((verified(r.stderr) or "").upper() == best,
              f"{name}: OpenBLAS was loaded with {best} already set (it reports {verified(r.stderr)})", r.stderr[-600:])
    else:
        check("kernel Prescott, as detected" in r.stderr, f"{name}: no better kernel for this CPU; Prescott kept and logged", r.stderr[-600:])
    if name == "run":
        check(r.returncode == 0, "run: the pipeline itself runs with the fake library", r.stderr[-600:])

    r = saeflow_run(args, lib_dir=fake_dir, coretype="Haswell")
    check("using OPENBLAS_CORETYPE=Haswell as set" in r.stderr and verified(r.stderr) == "Haswell",
          f"{name}: the user's OPENBLAS_CORETYPE=Haswell is kept and logged", r.stderr[-600:])

# The real library: an override is honoured by OpenBLAS itself, and with none the kernel is no fallback.
r = saeflow_run(["run", flow, "--no-progress"], coretype="Haswell")
check(r.returncode == 0 and verified(r.stderr) == "Haswell", "real OpenBLAS runs the Haswell kernel the user asked for", r.stderr[-600:])
r = saeflow_run(["run", flow, "--no-progress"])
fallbacks = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai"}
kernel = verified(r.stderr)
check(kernel is not None and (best is None or kernel.lower() not in fallbacks),
      f"real OpenBLAS runs kernel {kernel}, not a fallback, on a CPU with {best} features", r.stderr[-600:])
# Commands that compute nothing stay quiet.
r = saeflow_run(["stages", "--list"], lib_dir=fake_dir)
check("openblas" not in r.stderr, "saeflow stages logs nothing about OpenBLAS", r.stderr[-300:])

print(f"{failures} failure(s)")
sys.exit(1 if failures else 0)
