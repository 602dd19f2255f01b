#!/usr/bin/python3
"""The HTML dashboard in a real browser (headless Chromium): the index lists every alive feature,
clicking a column header sorts the table, a feature page renders its highlighted tokens (orange
pixels in a screenshot, decoded here with zlib), and no page logs a console error. The index's rows
are the features the fixture fires by PyTorch's encoding. Skips (77) without chromium.
usage: test_browser.py FM_DRIVE
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

import planted

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--window-size=1200,900"]


def chrome(browser, tmp, *args):
    profile = tempfile.mkdtemp(dir=tmp, prefix="profile_")
    r = subprocess.run([browser, *CHROME_FLAGS, f"--user-data-dir={profile}", *args],
                       capture_output=True, text=True, timeout=120)
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    return r.returncode, r.stdout, console


def png_rgb(path):
    """The pixels of an 8-bit RGB or RGBA PNG (what Chromium writes) as a [H, W, 3] uint8 array:
    chunks, zlib-inflated IDAT, per-row filters undone (PNG spec, section 9)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError(f"{path}: PNG depth {depth}, colour type {ctype}, interlace {interlace} not handled")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        ftype, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:  # Up
            cur = (line + prev) & 255
        elif ftype == 1:  # Sub: a running sum per channel
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) & 255
        else:  # Average, Paeth: sequential along the row
            cur = line.copy()
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
                if ftype == 3:
                    cur[x] = (cur[x] + (a + b) // 2) & 255
                else:
                    p_ = a + b - c
                    pa, pb, pc = abs(p_ - a), abs(p_ - b), abs(p_ - c)
                    cur[x] = (cur[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)[:, :, :3]


def main():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        print("chromium not installed (Debian: apt-get install chromium): skipping")
        return 77
    drive = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="fm_browser_")
    fx = planted.make(tmp)
    out = os.path.join(tmp, "run")
    r = subprocess.run([drive, "stage", fx["msgs_path"], f"sae={fx['sae_dir']}", f"out={out}",
                        f"tokenizer={fx['vocab_path']}", "top_n=5"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"fm_drive failed: {r.stderr}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    alive = summary["alive"]
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    # The console check must be able to fail: a page with a script error is seen.
    bad = os.path.join(tmp, "bad.html")
    with open(bad, "w") as f:
        f.write("<!DOCTYPE html><html><body><script>no_such_function();</script></body></html>")
    _, _, console = chrome(browser, tmp, "--dump-dom", "file://" + bad)
    check(console, "a deliberate script error was not seen on the console: the check would be void")

    index = os.path.join(out, "index.html")
    rc, dom, console = chrome(browser, tmp, "--dump-dom", "file://" + index)
    rows = re.findall(r'<tr><td data-v="(\d+)">', dom)
    check(rc == 0, f"chromium exit {rc} on index.html")
    # The fixture's alive features, from PyTorch's encoding of its activations (not from the miner).
    alive_ref = sorted(int(i) for i in np.flatnonzero(fx["ref_max"] > 0))
    check(sorted(int(i) for i in rows) == alive_ref and set(range(6)) <= set(alive_ref),
          f"index.html shows features {sorted(int(i) for i in rows)}, the fixture fires {alive_ref} (planted 0-5 among them)")
    check(len(rows) == alive, f"index.html shows {len(rows)} features, summary has {alive} alive")
    check(not console, f"console messages on index.html: {console}")

    # Sorting: a wrapper page clicks the 'max' header inside the index and reports the order.
    wrapper = os.path.join(out, "sort_check.html")
    with open(wrapper, "w") as f:
        f.write('<!DOCTYPE html><html><body><pre id="order"></pre><iframe id="f" src="index.html"></iframe><script>'
                'document.getElementById("f").onload=function(){var d=this.contentDocument;'
                'd.querySelectorAll("#features th")[1].click();'
                'var ids=[].map.call(d.querySelectorAll("#features tbody tr"),function(r){return r.cells[0].dataset.v;});'
                'document.getElementById("order").textContent=ids.join(",");};</script></body></html>')
    _, dom, console = chrome(browser, tmp, "--allow-file-access-from-files", "--dump-dom", "file://" + wrapper)
    m = re.search(r'<pre id="order">([\d,]*)</pre>', dom)
    order = [int(x) for x in m.group(1).split(",")] if m and m.group(1) else []
    by_max = {f["id"]: f["max_act"] for f in summary["features"]}
    want = sorted(by_max, key=lambda i: -by_max[i])
    check([by_max[i] for i in order] == [by_max[i] for i in want], f"after a click on 'max': {order}, want {want}")
    check(not console, f"console messages while sorting: {console}")

    # Search: typing words into the filter box leaves exactly the summary's features whose language
    # verdicts / granularity have them all visible (any order, any case).
    # (A word matches inside a cell's text: "en" would match "token", so the words here are ones no
    # other cell contains.)
    verdicts = ("lang_paper", "lang_ascii", "lang_script", "lang_label")
    for query, want_ids in (("Mixed", {f["id"] for f in summary["features"] if "mixed" in [f[v] for v in verdicts]}),
                            ("ja   TOKEN", {f["id"] for f in summary["features"] if f["granularity"] == "token" and "ja" in
                                         [f[v] for v in verdicts]})):
        search = os.path.join(out, "search_check.html")
        with open(search, "w") as f:
            f.write('<!DOCTYPE html><html><body><pre id="shown"></pre><iframe id="f" src="index.html"></iframe><script>'
                    'document.getElementById("f").onload=function(){var d=this.contentDocument,box=d.getElementById("filter");'
                    f'box.value={json.dumps(query)};box.dispatchEvent(new Event("input"));'
                    'var ids=[].filter.call(d.querySelectorAll("#features tbody tr"),function(r){return r.style.display!=="none";})'
                    '.map(function(r){return r.cells[0].dataset.v;});'
                    'document.getElementById("shown").textContent=ids.join(",")+";"+d.getElementById("shown").textContent;};'
                    '</script></body></html>')
        _, dom, console = chrome(browser, tmp, "--allow-file-access-from-files", "--dump-dom", "file://" + search)
        m = re.search(r'<pre id="shown">([\d,]*);([^<]*)</pre>', dom)
        shown = {int(x) for x in m.group(1).split(",") if x} if m else None
        check(shown == want_ids and want_ids, f"search {query!r} shows {shown}, want {sorted(want_ids)}")
        check(m and m.group(2) == f"{len(want_ids)} of {alive} shown", f"search count line {m.group(2) if m else None!r}")
        check(not console, f"console messages while searching: {console}")

    # A feature page: renders, shows orange highlights, no console errors.
    shot = os.path.join(tmp, "feature0.png")
    page = os.path.join(out, "features", "0.html")
    rc, _, console = chrome(browser, tmp, f"--screenshot={shot}", "file://" + page)
    check(rc == 0 and os.path.exists(shot) and os.path.getsize(shot) > 1000, "no screenshot of a feature page")
    check(not console, f"console messages on a feature page: {console}")
    if os.path.exists(shot):
        px = png_rgb(shot).astype(np.int32)
        r_, g, b = px[..., 0], px[..., 1], px[..., 2]
        orange = int(((r_ > 200) & (g > 110) & (g < 200) & (b < 90)).sum())
        white = int(((r_ > 240) & (g > 240) & (b > 240)).sum())
        check(orange > 200, f"only {orange} orange pixels on the feature page (highlights/histogram missing)")
        check(white > px.shape[0] * px.shape[1] // 4, f"only {white} white pixels: the screenshot is not the page")
    _, dom, _ = chrome(browser, tmp, "--dump-dom", "file://" + page)
    check(dom.count('class="ex"') >= 1 and "<svg" in dom, "feature page lacks examples or the histogram")

    # Byte pieces: with 犬 and 猫 shown as the byte-fallback pieces <0xC3> <0xA9> (UTF-8 of "é"), every
    # example on every feature page reads as Python's UTF-8 decoding of its tokens' pieces: a run of
    # pieces spelling a character shows as the character, a stray piece as itself.
    vocab2 = os.path.join(tmp, "bytes.vocab")
    with open(fx["vocab_path"]) as f:
        pieces = [line.rstrip("\n").split("\t")[0] for line in f]
    pieces = ["<0xC3>" if p == "犬" else "<0xA9>" if p == "猫" else p for p in pieces]
    with open(vocab2, "w") as f:
        f.writelines(f"{p}\t0\n" for p in pieces)
    out2 = os.path.join(tmp, "run_bytes")
    r = subprocess.run([drive, "stage", fx["msgs_path"], f"sae={fx['sae_dir']}", f"out={out2}",
                        f"tokenizer={vocab2}", "top_n=5"], capture_output=True, text=True)
    check(r.returncode == 0, f"fm_drive with byte pieces: {r.stderr}")

    def shown_text(ids):
        out_, i = "", 0
        while i < len(ids):
            for k in range(1, 5):
                run = [pieces[t] for t in ids[i:i + k]]
                if len(run) < k or not all(re.fullmatch(r"<0x[0-9A-F]{2}>", p) for p in run):
                    k = 0
                    break
                try:
                    c = bytes(int(p[3:5], 16) for p in run).decode("utf-8")
                    out_ += c
                    break
                except UnicodeDecodeError:
                    continue
            else:
                k = 0
            if not k:
                out_ += pieces[ids[i]].replace("\u2581", " ")
                k = 1
            i += k
        return out_

    import html as html_mod
    n_ex = n_decoded = 0
    for name in sorted(os.listdir(os.path.join(out2, "features"))) if r.returncode == 0 else []:
        if not name.endswith(".json"):
            continue
        with open(os.path.join(out2, "features", name)) as f:
            fj = json.load(f)
        ref = {}

        def collect(o):
            if isinstance(o, dict):
                if "tokens" in o and "doc_id" in o:
                    ref[(o["doc_id"], o["pos"])] = o["tokens"]
                for v_ in o.values():
                    collect(v_)
            elif isinstance(o, list):
                for v_ in o:
                    collect(v_)
        collect(fj)
        with open(os.path.join(out2, "features", name[:-5] + ".html"), encoding="utf-8") as f:
            page = f.read()
        for m_ in re.finditer(r'<div class="ex"><span class="meta">[^<]*doc (\d+) &middot; pos (\d+)[^<]*</span><br>(.*?)</div>', page):
            key = (int(m_.group(1)), int(m_.group(2)))
            got = html_mod.unescape(re.sub(r"<[^>]*>", "", m_.group(3)))
            want_t = shown_text(ref[key]) if key in ref else None
            check(got == want_t, f"{name} doc {key}: shows {got!r}, want {want_t!r}")
            n_ex += 1
            n_decoded += "é" in got
    check(n_ex > 20 and n_decoded > 0, f"{n_ex} examples, {n_decoded} with a decoded é: the fixture must exercise both")
    print(f"byte pieces: {n_ex} examples, {n_decoded} with a decoded character")

    for msg in failures:
        print("FAIL:", msg)
    print(f"index rows {len(rows)}, alive {alive}; {'FAIL' if failures else 'ok'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
