"""Reads report.html's SVG charts back into numbers, independently of how they were drawn: the
y-axis map comes from the printed tick labels and their positions (a least-squares line; ticks off
it are an error), the x-axis map likewise (log10 of the labels on a log axis, the "0" tick apart),
and every point's value is then what its position means on those axes. Used by test_report.py."""
import math
import re
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"


def charts(html):
    """{chart id: ElementTree root} for every <svg class="chart"> in the page."""
    out = {}
    for m in re.finditer(r'<svg class="chart".*?</svg>', html, re.S):
        root = ET.fromstring(m.group(0))
        out[root.get("id")] = root
    return out


def _fit(pairs, what):
    """Least-squares pos = a + b * value over (value, pos) pairs; raises if any pair is off the line."""
    if len(pairs) < 2:
        raise ValueError(f"{what}: {len(pairs)} labelled ticks, need at least two")
    n = len(pairs)
    mv = sum(v for v, _ in pairs) / n
    mp = sum(p for _, p in pairs) / n
    b = sum((v - mv) * (p - mp) for v, p in pairs) / sum((v - mv) ** 2 for v, _ in pairs)
    a = mp - b * mv
    worst = max(abs(a + b * v - p) for v, p in pairs)
    if worst > 0.6:
        raise ValueError(f"{what}: tick labels are not evenly placed (off by {worst:.2f} px): {pairs}")
    return a, b


def read_chart(root, log_x):
    """(y ticks, x ticks, points): ticks as printed numbers; points as
    {series: {run: (x meaning, y meaning, printed value label)}} read from positions."""
    yt = [(float(t.text), float(t.get("y")) - 3) for t in root.iter(SVG + "text") if t.get("class") == "ytick"]
    xt = [(float(t.text), float(t.get("x"))) for t in root.iter(SVG + "text") if t.get("class") == "xtick"]
    ya, yb = _fit(yt, "y axis")
    zero_x = [p for v, p in xt if v == 0] if log_x else []
    xa, xb = _fit([(math.log10(v) if log_x else v, p) for v, p in xt if not (log_x and v == 0)], "x axis")
    points = {}
    for g in root.iter(SVG + "g"):
        if g.get("class") != "series":
            continue
        labels = [float(t.text) for t in g.iter(SVG + "text") if t.get("class") == "val"]
        got = {}
        for c, label in zip([c for c in g.iter(SVG + "circle") if c.get("class") == "pt"], labels):
            cx, cy = float(c.get("cx")), float(c.get("cy"))
            if log_x and zero_x and abs(cx - zero_x[0]) < 0.6:
                x = 0.0
            else:
                u = (cx - xa) / xb
                x = 10 ** u if log_x else u
            got[int(c.get("data-run"))] = (x, (cy - ya) / yb, label)
        points[g.get("data-series")] = got
    return [v for v, _ in yt], [v for v, _ in xt], points
