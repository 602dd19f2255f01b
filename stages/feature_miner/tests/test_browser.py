#!/usr/bin/python3
"""The HTML dashboard in a real browser (headless Chromium): the index lists every alive feature,
clicking a column header sorts the table, a feature page renders its highlighted tokens (orange
pixels in a screenshot), and no page logs a console error. Skips (77) without chromium.
usage: test_browser.py FM_DRIVE
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

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

    # A feature page: renders, shows orange highlights, no console errors.
    shot = os.path.join(tmp, "feature0.png")
    page = os.path.join(out, "features", "0.html")
    rc, _, console = chrome(browser, tmp, f"--screenshot={shot}", "file://" + page)
    check(rc == 0 and os.path.exists(shot) and os.path.getsize(shot) > 1000, "no screenshot of a feature page")
    check(not console, f"console messages on a feature page: {console}")
    try:
        from PIL import Image
        img = Image.open(shot).convert("RGB")
        orange = sum(1 for (r_, g, b) in img.getdata() if r_ > 200 and 110 < g < 200 and b < 90)
        check(orange > 200, f"only {orange} orange pixels on the feature page (highlights/histogram missing)")
    except ImportError:
        print("python3-pil not installed: pixel check skipped")
    _, dom, _ = chrome(browser, tmp, "--dump-dom", "file://" + page)
    check(dom.count('class="ex"') >= 1 and "<svg" in dom, "feature page lacks examples or the histogram")

    for msg in failures:
        print("FAIL:", msg)
    print(f"index rows {len(rows)}, alive {alive}; {'FAIL' if failures else 'ok'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
