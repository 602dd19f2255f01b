#!/usr/bin/python3
"""`saeflow report` over two checkpoints (driven through fm_drive report): language and
granularity shares equal the miner summaries', FVU and dead fraction come from the documented
metrics files, and the persist/appear/vanish counts equal a NumPy recomputation of the decoder
cosine matching (with the same-index count and the chance baseline, against quadrature). The second SAE keeps half of the first one's decoder directions (slightly
perturbed) and replaces the rest, so all three counts are non-zero.
usage: test_report.py FM_DRIVE
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import planted
import report_svg

THR = 0.7
GRAN = ("token", "concept", "uninterpretable", "few")


def read_sae(sae_dir):
    with open(os.path.join(sae_dir, "model.safetensors"), "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], np.float32).reshape(h["shape"])
    return out


def main():
    drive = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="fm_report_")
    fx = planted.make(tmp)
    # Checkpoint B: directions 0..11 of A, perturbed; 12..23 new random ones.
    a = read_sae(fx["sae_dir"])
    rng = np.random.default_rng(5)
    W_a = a["decoder.weight"].T.copy()  # [n, d]
    W_b = W_a.copy()
    W_b[:12] += rng.standard_normal(W_b[:12].shape).astype(np.float32) * 0.05
    W_b[12:] = rng.standard_normal(W_b[12:].shape).astype(np.float32)
    W_b /= np.linalg.norm(W_b, axis=1, keepdims=True)
    sae_b = os.path.join(tmp, "sae_b")
    shutil.copytree(fx["sae_dir"], sae_b)
    planted.safetensors_np.write(os.path.join(sae_b, "model.safetensors"),
                              {"encoder.weight": W_b, "encoder.bias": a["encoder.bias"],
                               "decoder.weight": W_b.T.copy(), "b_dec": a["b_dec"]})
    runs = []
    # Checkpoint B's metrics as sae_trainer writes them: metrics.jsonl in the SAE directory, last line.
    with open(os.path.join(sae_b, "metrics.jsonl"), "w") as f:
        f.write('{"step": 50, "fvu": 0.5, "dead_fraction": 0.5}\n{"step": 100, "fvu": 0.125, "dead_fraction": 0.0625}\n')
    for name, sae, metrics in (("ckpt_a", fx["sae_dir"], {"fvu": 0.25, "dead_fraction": 0.125}),
                               ("ckpt_b", sae_b, None)):
        out = os.path.join(tmp, name)
        r = subprocess.run([drive, "stage", fx["msgs_path"], f"sae={sae}", f"out={out}",
                            f"tokenizer={fx['vocab_path']}", "top_n=5", "html=true"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"fm_drive stage failed: {r.stderr}")
        if metrics:
            with open(os.path.join(out, "metrics.json"), "w") as f:
                json.dump(metrics, f)
            # sae_eval's output in the run directory, as the demo writes it: the LM loss and with the SAE
            with open(os.path.join(out, "eval.json"), "w") as f:
                json.dump({"tokens": 64, "mse": 0.5, "loss_tokens": 63, "loss": 3.5, "loss_sae": 3.75,
                           "loss_increase": 0.25}, f)
        runs.append(out)
    # Where each checkpoint sits in training: the suite's checkpoints.json beside the model
    # directories the summaries name (the fixture mines without a model, so its name is set here).
    suite = os.path.join(tmp, "suite")
    os.makedirs(suite)
    tokens = {"step-000000": 0, "step-000100": 250000}
    with open(os.path.join(suite, "checkpoints.json"), "w") as f:
        json.dump({"parameters": 1000, "checkpoints": [{"step": int(d[5:]), "dir": d, "tokens_seen": t}
                                                       for d, t in tokens.items()]}, f)
    for run, d in zip(runs, tokens):
        with open(os.path.join(run, "summary.json")) as f:
            s = json.load(f)
        s["model"] = os.path.join(suite, d)
        with open(os.path.join(run, "summary.json"), "w") as f:
            json.dump(s, f)
    rep = os.path.join(tmp, "report")
    r = subprocess.run([drive, "report", *runs, "--out", rep, "--match-threshold", str(THR)],
                       capture_output=True, text=True)
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    check(r.returncode == 0, f"report exit {r.returncode}: {r.stderr}")
    check(r.stdout.strip().endswith(os.path.join(rep, "report.html")), "stdout does not end with the HTML path")
    table = [line for line in r.stdout.splitlines() if line.startswith("|")]
    check(len(table) == 4, f"stdout has {len(table)} table lines, want header, rule and two rows")
    with open(os.path.join(rep, "report.json")) as f:
        rj = json.load(f)
    summaries = []
    for run in runs:
        with open(os.path.join(run, "summary.json")) as f:
            summaries.append(json.load(f))
    check(len(rj) == 2, "two checkpoints in report.json")
    for row, s in zip(rj, summaries):
        for lang in ("en", "ja", "mixed"):
            want = s["language"]["paper"][lang] / s["alive"]
            check(abs(row["language_paper"][lang] - want) < 1e-12, f"{row['checkpoint']} {lang} share")
        check(sorted(s["granularity"]) == sorted(GRAN) and sum(s["granularity"].values()) == s["alive"],
              f"{row['checkpoint']}: granularity classes {s['granularity']} cover the alive features")
        for g in GRAN:
            check(abs(row["granularity"][g] - s["granularity"][g] / s["alive"]) < 1e-12, f"{row['checkpoint']} {g}")
    check(rj[0]["fvu"] == 0.25 and rj[0]["dead_fraction"] == 0.125, "metrics.json at the top level")
    check(rj[1]["fvu"] == 0.125 and rj[1]["dead_fraction"] == 0.0625, "last line of the trainer's metrics.jsonl")
    check(rj[0]["lm_loss"] == 3.5 and rj[0]["lm_loss_sae"] == 3.75 and rj[0]["lm_loss_increase"] == 0.25 and
          rj[0]["lm_loss_source"] == os.path.join(runs[0], "eval.json"), f"LM loss from sae_eval's eval.json: {rj[0]}")
    check(rj[1]["lm_loss"] is None and rj[1]["lm_loss_increase"] is None, "no LM loss where no file has it")
    check("LM loss (+ with SAE)" in table[0] and "| 3.500 (+0.250) |" in table[2] and "| n/a |" in table[3],
          f"the table's LM loss column: {table[2:]}")
    check(rj[1]["metrics_source"] == os.path.join(sae_b, "metrics.jsonl"), f"metrics source {rj[1]['metrics_source']}")

    # Reference matching on the alive features of each summary.
    alive_a = sorted(f["id"] for f in summaries[0]["features"])
    alive_b = sorted(f["id"] for f in summaries[1]["features"])
    cos = (W_a[alive_a] / np.linalg.norm(W_a[alive_a], axis=1, keepdims=True)) @ \
          (W_b[alive_b] / np.linalg.norm(W_b[alive_b], axis=1, keepdims=True)).T
    persist = int((cos.max(axis=1) >= THR).sum())
    want = {"persist": persist, "vanish": len(alive_a) - persist, "appear": int((cos.max(axis=0) < THR).sum())}
    with open(os.path.join(rep, "match-1.json")) as f:
        pairs = json.load(f)["pairs"]
    ids_b = np.array(alive_b)
    want_pairs = [[a_id, int(ids_b[np.argmax(cos[r])]), float(cos[r].max())] for r, a_id in enumerate(alive_a)]
    check([p[:2] for p in pairs] == [p[:2] for p in want_pairs], "match-1.json partners differ from NumPy's argmax")
    check(all(abs(p[2] - w[2]) < 1e-5 for p, w in zip(pairs, want_pairs)), "match-1.json cosines")
    match_want = want
    want["same_index"] = sum(1 for r, a_id in enumerate(alive_a) if cos[r].max() >= THR and want_pairs[r][1] == a_id)
    got = rj[1].get("match_previous", {})
    check({k: got.get(k) for k in want} == want, f"matching {got} != reference {want}")
    # Chance baseline: P(cos >= THR) for independent uniform directions in R^d, by quadrature of the
    # cosine's density (1 - c^2)^((d-3)/2), then 1 - (1 - p)^n_b per feature of A.
    d = W_a.shape[1]
    c = np.linspace(-1, 1, 2_000_001)
    dens = (1 - c * c) ** ((d - 3) / 2)
    p = np.trapz(dens[c >= THR], c[c >= THR]) / np.trapz(dens, c)
    chance = len(alive_a) * (1 - (1 - p) ** len(alive_b))
    check(abs(got.get("chance_persist", -1) - chance) < 1e-6 * max(1, chance),
          f"chance_persist {got.get('chance_persist')} != quadrature {chance} (p {p:.3g}, d {d})")
    rng_dirs = rng.standard_normal((2, 4000, d))
    rng_dirs /= np.linalg.norm(rng_dirs, axis=2, keepdims=True)
    mc = float(((rng_dirs[0] * rng_dirs[1]).sum(axis=1) >= THR).mean())
    check(abs(mc - p) < 5 * np.sqrt(p * (1 - p) / 4000) + 1e-4, f"P(cos >= {THR}) {p:.4g} vs Monte Carlo {mc:.4g}")
    check(all(v > 0 for v in want.values()), f"fixture should exercise all three counts: {want}")
    check("match_previous" not in rj[0], "the first checkpoint has no previous one")
    with open(os.path.join(rep, "report.html"), encoding="utf-8") as f:
        html = f.read()
    check(html.count('<svg class="chart"') == 8, "eight SVG charts in report.html (with the two LM loss charts)")
    check([r_.get("tokens_per_parameter") for r_ in rj] == [0, 250] and [r_.get("step") for r_ in rj] == [0, 100],
          f"training position from the suite's checkpoints.json: {[(r_.get('step'), r_.get('tokens_per_parameter')) for r_ in rj]}")
    # Every point of every chart, read back through its axes' printed ticks, is report.json's number.
    want_of = {
        "chart-lang": lambda row, s_: row["language_paper"][s_],
        "chart-lang-script": lambda row, s_: row["language_script"][s_],
        "chart-gran": lambda row, s_: row["granularity"]["few" if s_ == "few examples" else s_],
        "chart-loss": lambda row, s_: row["lm_loss" if s_ == "LM loss" else "lm_loss_sae"],
        "chart-loss-increase": lambda row, s_: row["lm_loss_increase"],
        "chart-fvu": lambda row, s_: row["fvu"],
        "chart-dead": lambda row, s_: row["dead_fraction"],
        "chart-match": lambda row, s_: row.get("match_previous", {}).get(s_),
    }
    svgs = report_svg.charts(html)
    check(sorted(svgs) == sorted(want_of), f"chart ids {sorted(svgs)}")
    n_points = 0
    for cid, root in svgs.items():
        try:
            yticks, xticks, points = report_svg.read_chart(root, log_x=True)
        except ValueError as e:
            check(False, f"{cid}: {e}")
            continue
        check(min(yticks) <= 0 <= max(yticks), f"{cid}: no zero on the y axis {yticks}")
        check(xticks == [0, 100, 1000], f"{cid}: x ticks {xticks}, want 0 and the decades 100, 1000")
        for series, got in points.items():
            for run_i, row in enumerate(rj):
                ref = want_of[cid](row, series)
                if ref is None:
                    check(run_i not in got, f"{cid} {series}: a point for run {run_i} that has no value")
                    continue
                x, v, label = got.get(run_i, (None, None, None))
                span = max(yticks) - min(yticks)
                check(v is not None and abs(v - ref) < 0.01 * span, f"{cid} {series} run {run_i}: plotted {v}, report.json {ref}")
                check(label is not None and abs(label - ref) <= 0.0051 * abs(ref) + 1e-12,
                      f"{cid} {series} run {run_i}: value label {label}, report.json {ref}")
                tpp = row["tokens_per_parameter"]
                check(x is not None and abs(x - tpp) <= 0.02 * tpp + 1e-9, f"{cid} {series} run {run_i}: at x {x}, want {tpp}")
                n_points += 1
    check(n_points >= 30, f"only {n_points} points checked")
    # In a real browser (skipped without chromium): the page loads with no console message and
    # its DOM holds the eight charts.
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:
        import test_browser
        rc_b, dom, console = test_browser.chrome(browser, tmp, "--dump-dom", "file://" + os.path.join(rep, "report.html"))
        n_dom = dom.count('class="chart"')
        check(rc_b == 0 and n_dom == 8, f"chromium on report.html: exit {rc_b}, {n_dom} charts")
        check(not console, f"console messages on report.html: {console}")
    else:
        print("chromium not installed (Debian: apt-get install chromium): report.html not rendered")
    # Links: each checkpoint name to its run's dashboard, the persist count to match-1.html, whose
    # rows are NumPy's pairs (most similar first) linked to both runs' feature pages.
    import re
    dash = re.findall(r'<a class="dashboard" href="([^"]+)">', html)
    check([os.path.realpath(os.path.join(rep, h)) for h in dash] == [os.path.realpath(os.path.join(run, "index.html")) for run in runs],
          f"dashboard links {dash}")
    check('<a href="match-1.html">' in html, "no link to match-1.html")
    with open(os.path.join(rep, "match-1.html"), encoding="utf-8") as f:
        mhtml = f.read()
    mrows = re.findall(r'<tr><td><a href="([^"]+)">(\d+)</a></td><td><a href="([^"]+)">(\d+)</a></td><td>([\d.-]+)</td>', mhtml)
    check(sorted((int(r_[1]), int(r_[3])) for r_ in mrows) == sorted((p[0], p[1]) for p in want_pairs),
          f"match-1.html rows {[(r_[1], r_[3]) for r_ in mrows]} != NumPy's pairs")
    check([float(r_[4]) for r_ in mrows] == sorted((float(r_[4]) for r_ in mrows), reverse=True), "match-1.html not by cosine")
    for ha, ia, hb, ib, _ in mrows:
        check(os.path.realpath(os.path.join(rep, ha)) == os.path.realpath(os.path.join(runs[0], "features", ia + ".html")) and
              os.path.exists(os.path.join(rep, hb)) and
              os.path.realpath(os.path.join(rep, hb)) == os.path.realpath(os.path.join(runs[1], "features", ib + ".html")),
              f"match-1.html links {ha}, {hb}")
    if browser:
        _, _, console = test_browser.chrome(browser, tmp, "--dump-dom", "file://" + os.path.join(rep, "match-1.html"))
        check(not console, f"console messages on match-1.html: {console}")
    # Without the suite's checkpoints.json the x-axis is the step from the run name ("step100"), linear.
    os.rename(os.path.join(suite, "checkpoints.json"), os.path.join(suite, "moved.json"))
    rep2 = os.path.join(tmp, "report_steps")
    r2 = subprocess.run([drive, "report", *runs, "--no-match", "--out", rep2], capture_output=True, text=True)
    check(r2.returncode == 0, f"report without the suite: {r2.stderr}")
    if r2.returncode == 0:
        with open(os.path.join(rep2, "report.html"), encoding="utf-8") as f:
            html2 = f.read()
        root = report_svg.charts(html2).get("chart-fvu")
        try:
            _, xt2, pts2 = report_svg.read_chart(root, log_x=False)
            xs = sorted(round(x, 6) for x, _, _ in pts2["FVU"].values())
            check(xs == [100, 100] and 0 in xt2 and "training step" in html2 and "log scale" not in html2,
                  f"step axis: points at {xs}, ticks {xt2}")
        except (ValueError, AttributeError, KeyError) as e:
            check(False, f"step axis: {e!r}")
    for word in ("persist", "same index", "chance"):
        check(f"<dt>{word}" in html, f"report.html does not explain {word!r}")
    check("<th>LM loss (+ with SAE)</th>" in html and "<td>3.500 (+0.250)</td>" in html, "the HTML table's LM loss")
    with open(os.path.join(rep, "report.md"), encoding="utf-8") as f:
        md = f.read()
    check(md.count("\n| step100 |") == 2, "two rows in report.md (both runs mined checkpoint step100)")
    # Every granularity class has its column, with the summary's share.
    lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    head = lines[0]
    for g, col in zip(GRAN, ("token", "concept", "uninterpretable", "few ex.")):
        check(col in head, f"report.md has no column {col!r}: {head}")
        if col in head:
            for cells, s in zip(lines[2:], summaries):
                want = f"{100 * s['granularity'][g] / s['alive']:.1f}%"
                check(cells[head.index(col)] == want, f"report.md {col}: {cells[head.index(col)]} != {want}")

    h = subprocess.run([drive, "report", "--help"], capture_output=True, text=True)
    check(h.returncode == 0 and h.stdout.startswith("usage: saeflow report") and "--no-match" in h.stdout and not h.stderr,
          f"report --help: exit {h.returncode}, stdout {h.stdout[:80]!r}, stderr {h.stderr[:80]!r}")
    h = subprocess.run([drive, "report", "--bogus"], capture_output=True, text=True)
    check(h.returncode == 2 and "usage: saeflow report" in h.stderr, f"report --bogus: exit {h.returncode}")
    # A summary of an older miner (verdict "bilingual", no "ascii" rule) is refused, not read as zeros.
    old = os.path.join(tmp, "old_run")
    os.makedirs(old)
    with open(os.path.join(runs[0], "summary.json")) as f:
        s = json.load(f)
    for rule in s["language"].values():
        rule["bilingual"] = rule.pop("mixed")
    with open(os.path.join(old, "summary.json"), "w") as f:
        json.dump(s, f)
    h = subprocess.run([drive, "report", old, "--no-match", "--out", os.path.join(tmp, "old_report")], capture_output=True, text=True)
    check(h.returncode == 1 and "language.paper.mixed" in h.stderr and "older feature_miner" in h.stderr,
          f"older summary: exit {h.returncode}, {h.stderr!r}")

    for msg in failures:
        print("FAIL:", msg)
    print(f"matching {match_want}; {n_points} chart points read back; {'FAIL' if failures else 'ok'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
