#!/usr/bin/python3
"""llm-jp-sae's SAE files read by saeflow, against PyTorch (Debian's python3-torch):

- sae.pth as llm-jp-sae's 2025-03 code writes it (torch.save of the SparseAutoEncoder state dict in
  bf16, under .../k_K/nl_Scalar/...): saeflow's codes and reconstructions of raw activations equal a
  PyTorch forward of that code's model (written here from its model.py: x / ||x||, encoder(x - b_dec),
  ReLU, top-k, acts @ W_dec + b_dec); `saeflow sae info` names the layout and where k and the
  normalisation came from; without those directory names it asks for --k / --normalize;
  `saeflow sae convert` gives a model with the same codes.
- the same state dict converted to safetensors is refused until its normalisation is stated (or its
  directory says nl_None / nl_Scalar); the 2025-09 TopKSAE layout is named and means x / ||x||.
- malformed files give named errors: a pickle calling posix.system, a LongStorage, a list, a
  non-contiguous tensor, a storage record of the wrong size, a truncated zip, the legacy non-zip format.

  test_sae_pth.py SAEFLOW_EXE SAE_CODES_EXE
"""
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch

SAEFLOW, CODES = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
D, N, K, ROWS = 16, 64, 5, 40
failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    failures += not ok


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True)


class SparseAutoEncoder(torch.nn.Module):
    """The 2025-03 model's parameters (llm-jp-sae model.py at d9eb8c6), bf16."""

    def __init__(self, gen):
        super().__init__()
        self.encoder = torch.nn.Linear(D, N, dtype=torch.bfloat16)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.randn(N, D, generator=gen) / D ** 0.5)
            self.encoder.bias.copy_(torch.randn(N, generator=gen) * 0.05)
        w = torch.randn(N, D, generator=gen)
        self.W_dec = torch.nn.Parameter((w / w.norm(dim=1, keepdim=True)).to(torch.bfloat16))
        self.b_dec = torch.nn.Parameter((torch.randn(D, generator=gen) * 0.02).to(torch.bfloat16))


def reference(sd, x, unit):
    """That code's forward in float64 on the bf16 weights: codes (dense [rows, n]) and x_hat in raw space."""
    W, b, Wd, bd = (sd[k].double() for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec"))
    x = torch.from_numpy(x).double()
    norm = x.norm(dim=-1, keepdim=True) if unit else torch.ones(x.shape[0], 1, dtype=torch.float64)
    pre = torch.relu((x / norm - bd) @ W.T + b)
    top = pre.topk(K, dim=-1)
    z = torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
    return z.numpy(), ((z @ Wd + bd) * norm).numpy()


def saeflow_codes(path, x, tmp, k=0, norm="-"):
    xf = os.path.join(tmp, "x.f32")
    x.astype("<f4").tofile(xf)
    out = os.path.join(tmp, "codes")
    p = run(CODES, path, xf, out, str(k), norm)
    if p.returncode != 0:
        return None, None, p.stderr
    idx = np.fromfile(out + ".idx", dtype="<i4").reshape(ROWS, -1)
    val = np.fromfile(out + ".val", dtype="<f4").reshape(ROWS, -1)
    z = np.zeros((ROWS, N))
    for r in range(ROWS):
        for i, v in zip(idx[r], val[r]):
            if i >= 0:
                z[r, i] = v
    return z, np.fromfile(out + ".xhat", dtype="<f4").reshape(ROWS, D), p.stderr


def compare(z, xhat, zr, xr, what):
    same_sets = all(set(np.nonzero(z[r])[0]) == set(np.nonzero(zr[r])[0]) for r in range(ROWS))
    check(same_sets, f"{what}: the same {K} latents fire in every row as in the PyTorch forward")
    check(np.abs(z - zr).max() < 1e-5, f"{what}: code values within 1e-5 (max {np.abs(z - zr).max():.2g})")
    rel = np.abs(xhat - xr).max() / np.abs(xr).max()
    check(rel < 1e-5, f"{what}: reconstruction in the raw space within 1e-5 (relative {rel:.2g})")


def write_safetensors(path, tensors):
    """safetensors by hand (the format is a JSON header and raw little-endian data)."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.float().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


gen = torch.Generator().manual_seed(7)
sae = SparseAutoEncoder(gen)
sd = sae.state_dict()
rng = np.random.default_rng(3)
x = (rng.standard_normal((ROWS, D)) * 3 + rng.standard_normal(D) * 2).astype(np.float32)

with tempfile.TemporaryDirectory() as tmp:
    # --- sae.pth where llm-jp-sae's 2025-03 train.py saves it ---
    release = os.path.join(tmp, "layer_12", "n_d_4", f"k_{K}", "nl_Scalar", "ckpt_0988240", "lr_0.001")
    os.makedirs(release)
    pth = os.path.join(release, "sae.pth")
    torch.save(sd, pth)
    zr, xr = reference(sd, x, unit=True)
    z, xhat, err = saeflow_codes(pth, x, tmp)
    check(z is not None, "sae.pth loads (k and normalisation from the directory names): " + err.strip()[-200:])
    if z is not None:
        compare(z, xhat, zr, xr, "sae.pth")
    z2, xhat2, err = saeflow_codes(release, x, tmp)
    check(z2 is not None and np.array_equal(z, z2), "the directory holding sae.pth loads the same")

    p = run(SAEFLOW, "sae", "info", release)
    check(p.returncode == 0 and "layout llm-jp-sae 2025-03 sae.pth" in p.stdout and f"k {K}\n" in p.stdout
          and "normalize unit\n" in p.stdout and "nl_Scalar" in p.stdout and f"k_{K}" in p.stdout,
          "saeflow sae info names the 2025-03 layout and where k and the normalisation came from")
    conv = os.path.join(tmp, "converted")
    p = run(SAEFLOW, "sae", "convert", pth, conv)
    z3, xhat3, err = saeflow_codes(conv, x, tmp)
    check(p.returncode == 0 and z3 is not None and np.abs(z3 - zr).max() < 1e-5,
          "saeflow sae convert sae.pth -> our layout: the same codes " + (p.stderr.strip()[-200:] if p.returncode else ""))

    # the stages load it too: sae_eval over tensor_gen rows, checked then run
    flow = os.path.join(tmp, "eval.flow")
    with open(flow, "w") as f:
        f.write('set sae = x\nstage gen = tensor_gen {\n count = 4\n rows = 32\n cols = %d\n seed = 1\n}\n'
                'stage ev = sae_eval {\n input = gen\n field = tensor\n sae_dir = "${sae}"\n out = "%s"\n}\n'
                % (D, os.path.join(tmp, "eval.json")))
    p = run(SAEFLOW, "run", flow, "--no-progress", "sae=" + release)
    ev = json.load(open(os.path.join(tmp, "eval.json"))) if p.returncode == 0 else {}
    check(p.returncode == 0 and ev.get("tokens") == 128 and ev.get("normalize") == "unit" and 0 < ev.get("l0", 0) <= K,
          "sae_eval runs on the directory holding sae.pth " + (p.stderr[-300:] if p.returncode else ""))

    # nl_None: no normalisation
    none_dir = os.path.join(tmp, "b", f"k_{K}", "nl_None")
    os.makedirs(none_dir)
    torch.save(sd, os.path.join(none_dir, "sae.pth"))
    zr0, xr0 = reference(sd, x, unit=False)
    z, xhat, err = saeflow_codes(none_dir, x, tmp)
    check(z is not None, "nl_None sae.pth loads " + err.strip()[-200:])
    if z is not None:
        compare(z, xhat, zr0, xr0, "nl_None sae.pth")

    # nowhere recorded: must be stated
    bare = os.path.join(tmp, "bare")
    os.makedirs(bare)
    torch.save(sd, os.path.join(bare, "sae.pth"))
    p = run(SAEFLOW, "sae", "info", bare)
    check(p.returncode == 1 and "records no k" in p.stderr and "--k" in p.stderr, "no k_N directory: asks for --k")
    p = run(SAEFLOW, "sae", "info", bare, "--k", str(K))
    check(p.returncode == 1 and "no input normalisation" in p.stderr and "--normalize unit" in p.stderr,
          "no nl_ directory: asks for --normalize")
    p = run(SAEFLOW, "check", flow, "sae=" + bare)
    check(p.returncode == 2 and "records no k" in p.stderr, "saeflow check of sae_eval on it: the same error, exit 2")
    p = run(SAEFLOW, "sae", "info", bare, "--k", str(K), "--normalize", "unit")
    check(p.returncode == 0 and "normalize_from stated by the user" in p.stdout, "stated: loads, and says so")
    std_dir = os.path.join(tmp, "c", f"k_{K}", "nl_Standardization")
    os.makedirs(std_dir)
    torch.save(sd, os.path.join(std_dir, "sae.pth"))
    p = run(SAEFLOW, "sae", "info", std_dir)
    check(p.returncode == 1 and "nl_Standardization is not supported" in p.stderr, "nl_Standardization: named error")

    # --- the state dict converted to safetensors ---
    st_dir = os.path.join(tmp, "st")
    os.makedirs(st_dir)
    write_safetensors(os.path.join(st_dir, "model.safetensors"), sd)
    with open(os.path.join(st_dir, "config.json"), "w") as f:  # what save_pretrained of that model writes
        json.dump({"d_in": D, "expansion_factor": N // D, "k": K, "torch_dtype": "bfloat16"}, f)
    p = run(SAEFLOW, "sae", "info", st_dir)
    check(p.returncode == 1 and "nothing records its input normalisation" in p.stderr,
          "2025-03 state dict in model.safetensors, no normalisation recorded: refused, not guessed")
    z, _, err = saeflow_codes(st_dir, x, tmp)
    check(z is None and "--normalize" in err, "the library loader refuses it too (sae_eval, the miner)")
    conv2 = os.path.join(tmp, "st-converted")
    p = run(SAEFLOW, "sae", "convert", st_dir, conv2, "--normalize", "unit")
    z, xhat, err = saeflow_codes(conv2, x, tmp)
    check(p.returncode == 0 and z is not None, "stated with convert --normalize unit: loads " + (p.stderr[-200:] if p.returncode else ""))
    if z is not None:
        compare(z, xhat, zr, xr, "converted safetensors, stated unit")
    sp_dir = os.path.join(tmp, "sp")
    os.makedirs(sp_dir)
    write_safetensors(os.path.join(sp_dir, "sae.safetensors"), sd)
    p = run(SAEFLOW, "sae", "info", sp_dir)
    check(p.returncode == 1 and "without cfg.json" in p.stderr, "sae.safetensors without cfg.json: refused")
    with open(os.path.join(sp_dir, "cfg.json"), "w") as f:
        json.dump({"d_in": D, "k": K}, f)
    p = run(SAEFLOW, "sae", "info", sp_dir)
    check(p.returncode == 1 and "nothing records its input normalisation" in p.stderr,
          "sae.safetensors whose cfg.json is not sparsify's: refused")
    nl_dir = os.path.join(tmp, "d", "nl_None")
    os.makedirs(nl_dir)
    for f in ("sae.safetensors", "cfg.json"):
        os.rename(os.path.join(sp_dir, f), os.path.join(nl_dir, f))
    p = run(SAEFLOW, "sae", "info", nl_dir)
    check(p.returncode == 0 and "normalize none" in p.stdout and "nl_None" in p.stdout,
          "the same under nl_None: normalisation from the directory, said so")

    # --- the 2025-09 TopKSAE layout (save_pretrained) ---
    hf = os.path.join(tmp, "hf")
    os.makedirs(hf)
    write_safetensors(os.path.join(hf, "model.safetensors"),
                      {"encoder.weight": sd["encoder.weight"], "encoder.bias": sd["encoder.bias"],
                       "decoder.weight": sd["W_dec"].T, "b_dec": sd["b_dec"]})
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump({"d_in": D, "num_latents": N, "k": K, "model_type": "topk_sae", "architectures": ["TopKSAE"]}, f)
    p = run(SAEFLOW, "sae", "info", hf)
    check(p.returncode == 0 and "llm-jp-sae 2025-09 TopKSAE" in p.stdout and "normalize unit" in p.stdout,
          "the 2025-09 TopKSAE layout: named, x/||x|| as that code always does")
    z, xhat, err = saeflow_codes(hf, x, tmp)
    if z is not None:
        compare(z, xhat, zr, xr, "2025-09 TopKSAE")
    else:
        check(False, "2025-09 TopKSAE loads " + err)

    # --- malformed files: named errors ---
    def bad(name, obj=None, raw=None, expect=(), **kw):
        d = os.path.join(tmp, "bad", name, f"k_{K}", "nl_Scalar")
        os.makedirs(d)
        path = os.path.join(d, "sae.pth")
        if raw is not None:
            open(path, "wb").write(raw)
        else:
            torch.save(obj, path, **kw)
        p = run(SAEFLOW, "sae", "info", path)
        msg = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
        check(p.returncode == 1 and all(e in msg for e in expect), f"{name}: {msg[-160:]}")
        return path

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + os.path.join(tmp, "pwned"),))

    bad("pickle-calls-system", {"encoder.weight": Evil()}, expect=("posix.system", "refused"))
    check(not os.path.exists(os.path.join(tmp, "pwned")), "nothing in the pickle ran")
    bad("long-storage", dict(sd, **{"b_dec": torch.zeros(D, dtype=torch.int64)}), expect=("torch.LongStorage", "refused"))
    bad("a-list", {"encoder.weight": [1, 2]}, expect=("opcode 0x5d", "refused"))
    bad("non-contiguous", dict(sd, W_dec=sd["W_dec"].T.contiguous().T), expect=("non-contiguous",))
    bad("not-a-state-dict", {"x": sd["b_dec"]}, expect=("not llm-jp-sae's 2025-03",))
    buf = io.BytesIO()
    torch.save(sd, buf)
    good = buf.getvalue()
    bad("truncated-zip", raw=good[: len(good) // 2], expect=("not a torch.save zip archive",))
    bad("random-bytes", raw=bytes(range(256)) * 4, expect=("not a torch.save zip archive",))
    legacy = io.BytesIO()
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    bad("legacy-format", raw=legacy.getvalue(), expect=("not a torch.save zip archive",))
    # a storage record one element short
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info.filename, data[:-2] if info.filename.endswith("/data/0") else data)
    bad("storage-short", raw=out.getvalue(), expect=("storage", "holds"))

print("failures:", failures)
sys.exit(1 if failures else 0)
