#!/usr/bin/python3
"""tools/make_corpus.py --po's catalogue reader (read_mo) against Python's own gettext parser
(gettext.GNUTranslations) on .mo files written here byte by byte from the GNU format: little- and
big-endian, UTF-8 and EUC-JP catalogues, plural entries (the first form of each side is kept),
the header entry left out; a file with a bad magic or a string running past the end is an error.
Then, where the machine has them, every Japanese catalogue under /usr/share/locale.
usage: test_corpus_mo.py SOURCE_ROOT"""
import gettext
import glob
import io
import os
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.join(sys.argv[1], "tools"))
import make_corpus  # noqa: E402

failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def write_mo(entries, charset="UTF-8", big=False):
    """The GNU .mo layout: magic, revision, count, offsets of the two string tables, hash size and
    offset (0), the tables of (length, offset), then the NUL-terminated strings; entries sorted."""
    end = ">" if big else "<"
    header = ("Content-Type: text/plain; charset=%s\nPlural-Forms: nplurals=1; plural=0;\n" % charset)
    items = sorted([(b"", header.encode("ascii"))] + [(k.encode(charset), v.encode(charset)) for k, v in entries])
    n = len(items)
    o_tab, t_tab = 28, 28 + 8 * n
    data_off = t_tab + 8 * n
    blob, o_ent, t_ent = b"", [], []
    for k, _ in items:
        o_ent.append((len(k), data_off + len(blob)))
        blob += k + b"\0"
    for _, v in items:
        t_ent.append((len(v), data_off + len(blob)))
        blob += v + b"\0"
    out = struct.pack(end + "7I", 0x950412de, 0, n, o_tab, t_tab, 0, 0)
    out += b"".join(struct.pack(end + "2I", *e) for e in o_ent + t_ent)
    return out + blob


def reference(data):
    """gettext's catalogue as (msgid, msgstr), first forms, header left out."""
    cat = gettext.GNUTranslations(io.BytesIO(data))._catalog
    out = {}
    for k, v in cat.items():
        if isinstance(k, tuple):  # plural: (msgid, n) -> form n; the msgid key is the singular
            if k[1] == 0:
                out[k[0]] = v
        elif k:
            out[k] = v
    return out


entries = [("Open", "開く"), ("Save as…", "名前を付けて保存…"), ("%d file\0%d files", "%d 個のファイル"),
           ("Multi\nline", "複数\n行"), ("Quit", "終了")]
tmp = tempfile.mkdtemp(prefix="sf-mo-")
for charset in ("UTF-8", "EUC-JP"):
    for big in (False, True):
        path = os.path.join(tmp, f"{charset}-{big}.mo")
        data = write_mo(entries, charset, big)
        open(path, "wb").write(data)
        got = dict(make_corpus.read_mo(path))
        want = {"Open": "開く", "Save as…": "名前を付けて保存…", "%d file": "%d 個のファイル", "Multi\nline": "複数\n行",
                "Quit": "終了"}
        ref = reference(data)
        check(got == want == ref, f"{charset}, {'big' if big else 'little'}-endian: read_mo = gettext = the entries written ({got})")
bad = os.path.join(tmp, "bad.mo")
open(bad, "wb").write(b"\x00" * 40)
try:
    make_corpus.read_mo(bad)
    check(False, "a bad magic is an error")
except ValueError as e:
    check("magic" in str(e), f"a bad magic is an error: {e}")
cut = write_mo(entries)[:-20]
open(bad, "wb").write(cut)
try:
    make_corpus.read_mo(bad)
    check(False, "a string past the end is an error")
except ValueError as e:
    check("past the end" in str(e), f"a string past the end is an error: {e}")

system = sorted(glob.glob("/usr/share/locale/ja/LC_MESSAGES/*.mo"))
mism = [p for p in system if dict(make_corpus.read_mo(p)) != reference(open(p, "rb").read())]
check(not mism, f"the {len(system)} Japanese catalogues of this machine: read_mo = gettext (differ: {mism[:5]})")
if failures:
    print(f"{failures} failure(s); files in {tmp}")
    sys.exit(1)
shutil.rmtree(tmp)
