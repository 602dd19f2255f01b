#!/usr/bin/python3
"""Exports that load right: `saeflow sae convert --layout saelens|sparsify` of SAEs trained with each
input normalisation, read back by numpy emulations of each library's documented forward, written
here from their code (not ours):

- SAELens v6 (sae_lens/saes/sae.py + topk_sae.py, jbloomAus/SAELens 91ca16cc): process_sae_in casts,
  applies normalize_activations ("constant_norm_rescale": x * sqrt(d_in) / ||x||; "none"), subtracts
  b_dec when apply_b_dec_to_input; hidden_pre = sae_in @ W_enc + b_enc (times ||W_dec rows|| when
  rescale_acts_by_decoder_norm); TopK takes the k largest then ReLU; decode = acts @ W_dec + b_dec,
  then the normalisation's inverse (/ the same coefficient).
- sparsify (sparsify/sparse_coder.py + fused_encoder.py, EleutherAI/sparsify 9d3b136): encode =
  ReLU(linear(x - b_dec, encoder.weight, encoder.bias)) then topk(k); decode = top_acts @ W_dec[idx]
  + b_dec; fvu = sum (y - out)^2 / sum (y - mean y)^2; no input normalisation of any kind.

Each must reproduce saeflow's codes (the same latents, values within 1e-5 relative) and FVU:
- unit (x / ||x||, the paper's): SAELens from raw activations, its FVU in the raw space equal to
  saeflow's reconstruction's; the old export (normalize_activations "none", weights unchanged) is
  shown to be wrong on this data (so the check can fail). sparsify cannot normalise per token: its
  export is fed x / ||x|| as its cfg.json says, and its FVU equals ours in the normalised space;
  `convert` warns.
- scalar (x * s): folded into the weights for both, raw activations in, FVU in the raw space.
- none: unchanged.

  test_sae_export.py SAEFLOW_EXE SAE_CODES_EXE
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

SAEFLOW, CODES = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
D, N, K, ROWS = 32, 128, 6, 300
failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    failures += not ok


def write_safetensors(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32"
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out


def topk_dense(pre, k, relu_first):
    """sparsify: ReLU then topk; SAELens: topk then ReLU (the same dense codes)."""
    z = np.zeros_like(pre)
    p = np.maximum(pre, 0) if relu_first else pre
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(p, idx, axis=1)
    np.put_along_axis(z, idx, np.maximum(vals, 0), axis=1)
    return z


def saelens_forward(d, x):
    cfg = json.load(open(os.path.join(d, "cfg.json")))
    w = read_safetensors(os.path.join(d, "sae_weights.safetensors"))
    assert cfg["architecture"] == "topk" and cfg["d_in"] == D and cfg["d_sae"] == N
    sae_in = x.astype(np.float64)
    if cfg["normalize_activations"] == "constant_norm_rescale":
        coeff = np.sqrt(cfg["d_in"]) / np.linalg.norm(sae_in, axis=-1, keepdims=True)
    elif cfg["normalize_activations"] == "none":
        coeff = np.ones((x.shape[0], 1))
    else:
        raise ValueError(cfg["normalize_activations"])
    sae_in = sae_in * coeff - w["b_dec"] * bool(cfg.get("apply_b_dec_to_input", True))
    hidden_pre = sae_in @ w["W_enc"] + w["b_enc"]
    dec_norm = np.linalg.norm(w["W_dec"], axis=-1)
    if cfg.get("rescale_acts_by_decoder_norm", False):
        hidden_pre = hidden_pre * dec_norm
    acts = topk_dense(hidden_pre, cfg["k"], relu_first=False)
    dec_in = acts / dec_norm if cfg.get("rescale_acts_by_decoder_norm", False) else acts
    out = dec_in @ w["W_dec"] + w["b_dec"]
    return acts, out / coeff, cfg


def sparsify_forward(d, x):
    cfg = json.load(open(os.path.join(d, "cfg.json")))
    w = read_safetensors(os.path.join(d, "sae.safetensors"))
    assert set(w) == {"encoder.weight", "encoder.bias", "W_dec", "b_dec"} and cfg["d_in"] == D
    assert not cfg.get("transcode", False) and not cfg.get("skip_connection", False)
    pre = (x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"]
    z = topk_dense(pre, cfg["k"], relu_first=True)
    out = z @ w["W_dec"] + w["b_dec"]
    fvu = ((x - out) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    return z, out, fvu, cfg


def fvu(x, xhat):
    return ((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()


def saeflow_codes(path, x, tmp):
    xf = os.path.join(tmp, "x.f32")
    x.astype("<f4").tofile(xf)
    out = os.path.join(tmp, "codes")
    p = subprocess.run([CODES, path, xf, out], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    idx = np.fromfile(out + ".idx", dtype="<i4").reshape(ROWS, K)
    val = np.fromfile(out + ".val", dtype="<f4").reshape(ROWS, K)
    z = np.zeros((ROWS, N))
    for r in range(ROWS):
        m = idx[r] >= 0
        z[r, idx[r][m]] = val[r][m]
    return (z, np.fromfile(out + ".xhat", dtype="<f4").reshape(ROWS, D).astype(np.float64),
            np.fromfile(out + ".xhatn", dtype="<f4").reshape(ROWS, D).astype(np.float64))


def same_codes(z, zr, what):
    sets = all(set(np.nonzero(z[r])[0]) == set(np.nonzero(zr[r])[0]) for r in range(ROWS))
    err = np.abs(z - zr).max() / np.abs(zr).max()
    check(sets and err < 1e-5, f"{what}: the same latents in every row, values within 1e-5 relative ({err:.2g})")


# Activations with a sparse structure the SAE knows: a shared offset plus k unit atoms per row, each
# row then scaled by its own norm (5..50), as a residual stream's are. The SAE's b_dec is the mean of
# its normalised inputs (the paper's geometric median plays that part), its encoder tied to the atoms.
rng = np.random.default_rng(11)
atoms = rng.standard_normal((N, D))
atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
x = np.zeros((ROWS, D))
offset = rng.standard_normal(D)
offset *= 1.5 / np.linalg.norm(offset)
for r in range(ROWS):
    x[r] = offset + rng.uniform(0.5, 1.5, K) @ atoms[rng.choice(N, K, replace=False)]
x = (x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(5, 50, (ROWS, 1))).astype(np.float32)

with tempfile.TemporaryDirectory() as tmp:
    for norm in ("unit", "scalar", "none"):
        ours = os.path.join(tmp, norm)
        os.makedirs(ours)
        scale = 0.07 if norm == "scalar" else 1.0
        # our normalised space: what saeflow's eval reports in
        xn = x / np.linalg.norm(x, axis=1, keepdims=True) if norm == "unit" else x * scale
        b_dec = xn.mean(0).astype(np.float32)
        write_safetensors(os.path.join(ours, "model.safetensors"),
                          {"encoder.weight": atoms, "encoder.bias": np.full(N, -0.01), "decoder.weight": atoms.T,
                           "b_dec": b_dec})
        json.dump({"d_in": D, "num_latents": N, "k": K, "model_type": "topk_sae", "saeflow_normalize": norm,
                   "saeflow_norm_scale": scale}, open(os.path.join(ours, "config.json"), "w"))
        z, xhat, xhatn = saeflow_codes(ours, x, tmp)
        for layout in ("saelens", "sparsify"):
            out = os.path.join(tmp, f"{norm}-{layout}")
            p = subprocess.run([SAEFLOW, "sae", "convert", ours, out, "--layout", layout], capture_output=True, text=True)
            check(p.returncode == 0, f"{norm} -> {layout}: convert " + (p.stderr[-200:] if p.returncode else ""))
            warned = "sparsify applies no input normalisation" in p.stderr
            check(warned == (norm == "unit" and layout == "sparsify"),
                  f"{norm} -> {layout}: convert warns {'(sparsify cannot normalise per token)' if warned else 'nothing'}")
        zs, outs, cfg = saelens_forward(os.path.join(tmp, f"{norm}-saelens"), x)
        check(cfg["normalize_activations"] == ("constant_norm_rescale" if norm == "unit" else "none"),
              f"{norm} -> SAELens: normalize_activations {cfg['normalize_activations']}")
        same_codes(zs, z, f"{norm} -> SAELens forward on raw activations")
        f_ours, f_sl = fvu(x, xhat), fvu(x, outs)
        check(abs(f_sl - f_ours) < 1e-4 * max(f_ours, 1e-3) + 1e-7,
              f"{norm} -> SAELens: FVU in the raw space {f_sl:.6f} = saeflow's {f_ours:.6f}")
        if norm == "unit":
            # The old export: our weights, normalize_activations "none": SAELens encodes raw x wrongly.
            old = os.path.join(tmp, "old-saelens")
            os.makedirs(old)
            write_safetensors(os.path.join(old, "sae_weights.safetensors"),
                              {"W_enc": atoms.T, "W_dec": atoms, "b_enc": np.full(N, -0.01), "b_dec": b_dec})
            json.dump(dict(cfg, normalize_activations="none"), open(os.path.join(old, "cfg.json"), "w"))
            _, outo, _ = saelens_forward(old, x)
            check(fvu(x, outo) > 1.5 * f_ours,
                  f"the old export (normalize_activations none) gives FVU {fvu(x, outo):.3f} here, not {f_ours:.3f}")
        sp_in = xn if norm == "unit" else x  # sparsify: folded scalar takes raw x; unit needs x / ||x||
        zp, outp, fvu_p, cfg = sparsify_forward(os.path.join(tmp, f"{norm}-sparsify"), sp_in.astype(np.float64))
        same_codes(zp, z, f"{norm} -> sparsify forward on {'x / ||x||' if norm == 'unit' else 'raw activations'}")
        ref = fvu(xn, xhatn) if norm == "unit" else f_ours
        check(abs(fvu_p - ref) < 1e-4 * max(ref, 1e-3) + 1e-7,
              f"{norm} -> sparsify: its FVU {fvu_p:.6f} = saeflow's {ref:.6f}"
              f" ({'normalised' if norm == 'unit' else 'raw'} space)")
        if norm == "unit":
            check("x / ||x||" in cfg.get("saeflow_input", ""), "unit -> sparsify: cfg.json says to feed x / ||x||")
        # and back: each export loads into saeflow with the same codes
        for layout in ("saelens", "sparsify"):
            zb, _, _ = saeflow_codes(os.path.join(tmp, f"{norm}-{layout}"), x, tmp)
            same_codes(zb, z, f"{norm} -> {layout} -> saeflow")

    # A SAELens TopK SAE saved with rescale_acts_by_decoder_norm (its training default): decoder rows
    # of any norm, pre-activations scaled by them. saeflow folds that in on load: the same codes.
    sl = os.path.join(tmp, "saelens-rescale")
    os.makedirs(sl)
    row_norms = rng.uniform(0.3, 3.0, N)
    W_enc = rng.standard_normal((D, N)) * 0.2
    write_safetensors(os.path.join(sl, "sae_weights.safetensors"),
                      {"W_enc": W_enc, "W_dec": atoms * row_norms[:, None], "b_enc": rng.standard_normal(N) * 0.05,
                       "b_dec": rng.standard_normal(D) * 0.1})
    json.dump({"d_in": D, "d_sae": N, "k": K, "architecture": "topk", "dtype": "float32", "device": "cpu",
               "apply_b_dec_to_input": True, "normalize_activations": "none", "rescale_acts_by_decoder_norm": True,
               "metadata": {"sae_lens_version": "6.5.0", "hook_name": "blocks.3.hook_resid_post"}},
              open(os.path.join(sl, "cfg.json"), "w"))
    for apply_b_dec in (True, False):
        cfg = json.load(open(os.path.join(sl, "cfg.json")))
        json.dump(dict(cfg, apply_b_dec_to_input=apply_b_dec), open(os.path.join(sl, "cfg.json"), "w"))
        zs, outs, _ = saelens_forward(sl, x)
        z, xhat, _ = saeflow_codes(sl, x, tmp)
        what = f"SAELens rescale_acts_by_decoder_norm, apply_b_dec_to_input {apply_b_dec} -> saeflow"
        same_codes(z, zs, what)
        check(abs(fvu(x, xhat) - fvu(x, outs)) < 1e-5 * fvu(x, outs),
              f"{what}: the same FVU {fvu(x, xhat):.6f} = {fvu(x, outs):.6f}")

    # what the libraries save that is not this forward: refused by name, not misread
    for layout, extra, name in (("saelens", {"architecture": "jumprelu"}, "jumprelu"),
                                ("sparsify", {"activation": "groupmax"}, "groupmax"),
                                ("sparsify", {"transcode": True}, "transcode"),
                                ("sparsify", {"skip_connection": True}, "skip_connection")):
        d = os.path.join(tmp, f"unit-{layout}")
        cfg = json.load(open(os.path.join(d, "cfg.json")))
        json.dump(dict(cfg, **extra), open(os.path.join(d, "cfg.json"), "w"))
        p = subprocess.run([SAEFLOW, "sae", "info", d], capture_output=True, text=True)
        check(p.returncode == 1 and f"a '{name}' sparse coder, not a TopK SAE" in p.stderr,
              f"{layout} {extra}: refused by name")
        json.dump(cfg, open(os.path.join(d, "cfg.json"), "w"))

print("failures:", failures)
sys.exit(1 if failures else 0)
